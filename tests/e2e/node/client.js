#!/usr/bin/node
// A gRPC test driver on @grpc/grpc-js run inside a client Pod: ONE channel to TARGET, one
// named scenario, bounded in count and time, one JSON object on stdout.
//
//     client.js TARGET unary        [--count N] [--concurrency C] [--sleep-ms S]
//     client.js TARGET streams      all four kinds of call, with content checks
//     client.js TARGET cancel       cancel a unary, a server stream and a bidi call mid-way
//     client.js TARGET deadline     [--deadline-ms D] [--sleep-ms S]: DEADLINE_EXCEEDED
//     client.js TARGET metadata     ascii and -bin metadata both ways, trailers, errors
//     client.js TARGET during-kill  [--seconds T] [--concurrency C] [--sleep-ms S]
//
// The same scenarios, options and result fields as tests/grpc/client.py (python3-grpcio),
// so that one test asserts the same things of every stack. Raw Buffers on the wire, as
// tests/grpc/echo_service.py defines the service: no proto files. grpc-js dials IPv4 with
// AF_INET sockets where gRPC C-core uses AF_INET6 (v4-mapped): both reach spindle's redirect.
'use strict';

const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');

const PREFIX = '/spindle.test.Echo/';
const MAX_MESSAGE = 16 * 1024 * 1024 + 64 * 1024; // echo_service.MAX_MESSAGE
const MAX_COUNT = 100000;
const MAX_CONCURRENCY = 64;
const MAX_SECONDS = 120;

const raw = {
  requestSerialize: (b) => b,
  requestDeserialize: (b) => b,
  responseSerialize: (b) => b,
  responseDeserialize: (b) => b,
};
const Echo = grpc.makeGenericClientConstructor({
  Unary: { path: PREFIX + 'Unary', requestStream: false, responseStream: false, ...raw },
  ClientStream: { path: PREFIX + 'ClientStream', requestStream: true, responseStream: false, ...raw },
  ServerStream: { path: PREFIX + 'ServerStream', requestStream: false, responseStream: true, ...raw },
  Bidi: { path: PREFIX + 'Bidi', requestStream: true, responseStream: true, ...raw },
}, 'Echo');

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([k, v]) => [v, k]));

const unixNow = () => (performance.timeOrigin + performance.now()) / 1000;
const monoNow = () => performance.now() / 1000;
const round = (v, unit) => Math.round(v / unit) * unit;

// --- echo_service.blob(n, seed): CPython's random.Random(seed).randbytes(n) -----------------

function pyRandomBytes(seed, n) {
  // random.seed(int) for 0 <= seed < 2**32: MT19937 by init_by_array with the key [seed]
  const N = 624, M = 397;
  const mt = new Uint32Array(N);
  mt[0] = 19650218;
  for (let i = 1; i < N; i++) mt[i] = (Math.imul(1812433253, mt[i - 1] ^ (mt[i - 1] >>> 30)) + i) >>> 0;
  let i = 1;
  for (let k = N; k > 0; k--) {
    mt[i] = ((mt[i] ^ Math.imul(mt[i - 1] ^ (mt[i - 1] >>> 30), 1664525)) + seed) >>> 0;
    if (++i >= N) { mt[0] = mt[N - 1]; i = 1; }
  }
  for (let k = N - 1; k > 0; k--) {
    mt[i] = ((mt[i] ^ Math.imul(mt[i - 1] ^ (mt[i - 1] >>> 30), 1566083941)) - i) >>> 0;
    if (++i >= N) { mt[0] = mt[N - 1]; i = 1; }
  }
  mt[0] = 0x80000000;
  let index = N;
  const next = () => {
    if (index >= N) {
      for (let k = 0; k < N; k++) {
        const y = (mt[k] & 0x80000000) | (mt[(k + 1) % N] & 0x7fffffff);
        mt[k] = mt[(k + M) % N] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      index = 0;
    }
    let y = mt[index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  };
  // getrandbits(8 n).to_bytes(n, "little"): 32-bit words, least significant first; the
  // last, partial word keeps its most significant bits.
  const out = Buffer.alloc(n);
  for (let pos = 0; pos < n; pos += 4) {
    let r = next();
    const take = Math.min(4, n - pos);
    if (take < 4) r >>>= 32 - 8 * take;
    for (let b = 0; b < take; b++) out[pos + b] = (r >>> (8 * b)) & 0xff;
  }
  return out;
}

const blob = (n, seed) => (n > 0 ? pyRandomBytes(seed, n) : Buffer.alloc(0));
const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');

// --- options and result ----------------------------------------------------------------------

function parseArgs(argv) {
  const o = {
    count: 100, concurrency: 1, sleepMs: 0, seconds: 4, deadlineMs: 200, timeout: 30,
    maxSeconds: 90, run: `n${process.pid}`, appDefaults: false,
  };
  const names = {
    '--count': ['count', Number], '--concurrency': ['concurrency', Number],
    '--sleep-ms': ['sleepMs', Number], '--seconds': ['seconds', Number],
    '--deadline-ms': ['deadlineMs', Number], '--timeout': ['timeout', Number],
    '--max-seconds': ['maxSeconds', Number], '--run': ['run', String],
  };
  const pos = [];
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--')) { pos.push(argv[i]); continue; }
    // Keep grpc-js's default (transparent) retries, as apps run.
    if (argv[i] === '--app-defaults') { o.appDefaults = true; continue; }
    const spec = names[argv[i]];
    if (!spec || i + 1 >= argv.length) throw new Error(`bad option ${argv[i]}`);
    o[spec[0]] = spec[1](argv[++i]);
  }
  if (pos.length !== 2) throw new Error('need TARGET and SCENARIO');
  [o.target, o.scenario] = pos;
  return o;
}

class Result {
  constructor(o) {
    Object.assign(this, {
      ok: false, scenario: o.scenario, target: o.target, run: o.run, stack: 'node',
      grpc_js_version: require('@grpc/grpc-js/package.json').version, node_version: process.version,
      failures: [], pods: {}, errors: {},
    });
  }

  check(cond, what) {
    if (!cond) this.failures.push(what);
    return Boolean(cond);
  }

  countPod(pod) {
    if (pod) this.pods[pod] = (this.pods[pod] || 0) + 1;
  }
}

// The last value of each key, as client.py's {k: v for k, v in md}; -bin values are Buffers.
function mdMap(md) {
  const out = {};
  if (!md) return out;
  for (const [k, values] of Object.entries(md.toJSON())) {
    if (values.length) out[k] = values[values.length - 1];
  }
  return out;
}

function metadataOf(pairs) {
  const md = new grpc.Metadata();
  for (const [k, v] of pairs) md.add(k, v);
  return md;
}

const str = (v) => (v === undefined || v === null ? null : Buffer.isBuffer(v) ? v.toString('latin1') : String(v));
const same = (a, b) => (Buffer.isBuffer(a) && Buffer.isBuffer(b) ? a.equals(b) : a === b);

// --- the driver ----------------------------------------------------------------------------------

class Driver {
  constructor(o) {
    this.o = o;
    const options = {
      'grpc.max_send_message_length': MAX_MESSAGE,
      'grpc.max_receive_message_length': MAX_MESSAGE,
    };
    // What the test sees is what the path under test did: no client-side retries, unless the
    // test asks for an app's defaults.
    if (!o.appDefaults) options['grpc.enable_retries'] = 0;
    this.client = new Echo(o.target, grpc.credentials.createInsecure(), options);
    this.ids = 0;
    this.tEnd = monoNow() + Math.min(o.maxSeconds, MAX_SECONDS);
  }

  callId(kind) { return `${this.o.run}-${kind}-${++this.ids}`; }

  left() { return Math.max(0.1, this.tEnd - monoNow()); }

  timeout() { return Math.min(this.o.timeout, this.left()); }

  options(seconds) { return { deadline: Date.now() + Math.round(seconds * 1000) }; }

  close() { this.client.close(); }

  // One unary call: {code, details, response, initial, trailing} once the status came;
  // onCall(call) may watch the call as it runs.
  unary(request, md, seconds, onCall = null) {
    return new Promise((resolve) => {
      const out = { code: null, details: '', response: null, initial: {}, trailing: {} };
      let pending = 2;
      const done = () => { if (--pending === 0) resolve(out); };
      const call = this.client.Unary(request, metadataOf(md), this.options(seconds), (err, response) => {
        if (err) {
          out.code = CODE_NAMES[err.code] || String(err.code);
          out.details = err.details;
        } else {
          out.code = 'OK';
          out.response = response;
        }
        done();
      });
      call.on('metadata', (m) => { out.initial = mdMap(m); });
      call.on('status', (s) => { out.trailing = mdMap(s.metadata); done(); });
      if (onCall) onCall(call);
    });
  }

  // --- unary load --------------------------------------------------------------------------

  async load(res, count, seconds, records) {
    const details = {}, mismatches = [], calls = [];
    let next = 0;
    const stopAt = seconds ? monoNow() + seconds : null;
    const extra = this.o.sleepMs ? [['x-sleep-ms', String(this.o.sleepMs)]] : [];
    const worker = async () => {
      for (let n = 0; n < count; n++) {
        if (monoNow() >= this.tEnd || (stopAt && monoNow() >= stopAt)) return;
        const i = next++;
        if (i >= count) return;
        const cid = this.callId('u');
        const request = Buffer.from(`ping ${i}`);
        const t0 = unixNow();
        const r = await this.unary(request, [['x-call-id', cid], ...extra], this.timeout());
        const t1 = unixNow();
        const pod = str(r.initial['x-pod']);
        let code = r.code;
        if (code === 'OK' && !request.equals(r.response)) code = 'MISMATCH';
        if (code === 'OK') res.countPod(pod);
        else if (code === 'MISMATCH') mismatches.push(cid);
        else {
          res.errors[code] = (res.errors[code] || 0) + 1;
          if (!(code in details)) details[code] = r.details;
        }
        if (records) calls.push([cid, round(t0, 1e-6), round(t1, 1e-6), code, pod]);
      }
    };
    const t0 = monoNow();
    const workers = [];
    for (let k = 0; k < Math.max(1, Math.min(this.o.concurrency, MAX_CONCURRENCY)); k++) workers.push(worker());
    await Promise.all(workers); // every call has a deadline: this ends
    res.elapsed_s = round(monoNow() - t0, 0.001);
    res.error_details = details;
    const ok = Object.values(res.pods).reduce((a, b) => a + b, 0);
    const failed = Object.values(res.errors).reduce((a, b) => a + b, 0);
    res.calls_ok = ok;
    res.calls_done = ok + failed + mismatches.length;
    res.mismatches = mismatches.slice(0, 10);
    if (records) res.calls = calls.sort((a, b) => a[1] - b[1]);
  }

  async unaryScenario(res) {
    const count = Math.min(this.o.count, MAX_COUNT);
    await this.load(res, count, 0, false);
    res.check(Object.keys(res.errors).length === 0, `calls failed: ${JSON.stringify(res.errors)} ${JSON.stringify(res.error_details)}`);
    res.check(res.mismatches.length === 0, `responses differ from requests: ${res.mismatches}`);
    res.check(res.calls_done === count, `only ${res.calls_done} of ${count} calls done in time`);
  }

  async duringKill(res) {
    await this.load(res, MAX_COUNT, this.o.seconds, true);
  }

  // --- the four kinds, with content checks ---------------------------------------------------

  async streams(res) {
    const kinds = {};
    const cases = [
      ['unary', (out) => this.sUnary(out)],
      ['client_stream', (out) => this.sClientStream(out)],
      ['server_stream', (out) => this.serverStream(out, 50, 10000, 2000)],
      // 64 x 256 KiB: many times any stream window, so flow control must move it along.
      ['server_stream_16mib', (out) => this.serverStream(out, 64, 256 * 1024, 3000)],
      ['bidi_ping_pong', (out) => this.sBidiPingPong(out)],
      ['bidi_bulk_16mib', (out) => this.sBidiBulk(out)],
    ];
    for (const [name, fn] of cases) {
      const t0 = monoNow();
      const out = { ok: false };
      try {
        await fn(out);
      } catch (e) {
        out.error = `${e.code !== undefined ? CODE_NAMES[e.code] : e.name}: ${e.details || e.message}`;
      }
      out.ms = round((monoNow() - t0) * 1000, 0.1);
      kinds[name] = out;
      res.check(out.ok, `${name}: ${JSON.stringify(out).slice(0, 400)}`);
      res.countPod(out.pod);
    }
    res.kinds = kinds;
  }

  async sUnary(out) {
    const request = blob(100000, 11);
    const r = await this.unary(request, [['x-call-id', this.callId('su')]], this.timeout());
    out.pod = str(r.initial['x-pod']);
    out.code = r.code;
    out.ok = r.code === 'OK' && request.equals(r.response) &&
      str(r.trailing['x-req-sha256']) === sha256(request);
  }

  // Streams as promises: every message, the initial metadata, the status (code and trailers).
  collect(call, limit) {
    return new Promise((resolve) => {
      const out = { messages: [], initial: {}, code: null, details: '', trailing: {} };
      call.on('metadata', (m) => { out.initial = mdMap(m); });
      call.on('data', (m) => { if (out.messages.length <= limit) out.messages.push(m); });
      call.on('error', () => {}); // the status says it all
      call.on('status', (s) => {
        out.code = CODE_NAMES[s.code];
        out.details = s.details;
        out.trailing = mdMap(s.metadata);
        resolve(out);
      });
    });
  }

  async writeAll(call, messages) {
    for (const m of messages) {
      if (!call.write(m)) await new Promise((resolve) => call.once('drain', resolve));
    }
    call.end();
  }

  async sClientStream(out) {
    const sizes = [];
    for (let i = 0; i < 50; i++) sizes.push((i * 7919) % 30000 + 1);
    sizes.push(0, 1, 65536, 1000000);
    const messages = sizes.map((n, i) => blob(n, 1000 + i));
    const expected = sha256(Buffer.concat(messages));
    const r = await new Promise((resolve) => {
      const o = { initial: {} };
      let pending = 2;
      const done = () => { if (--pending === 0) resolve(o); };
      const call = this.client.ClientStream(metadataOf([['x-call-id', this.callId('cs')]]),
        this.options(this.timeout()), (err, response) => {
          o.code = err ? CODE_NAMES[err.code] : 'OK';
          o.response = response;
          done();
        });
      call.on('metadata', (m) => { o.initial = mdMap(m); });
      call.on('status', () => done());
      this.writeAll(call, messages);
    });
    const got = r.response ? JSON.parse(r.response.toString()) : {};
    Object.assign(out, { pod: str(r.initial['x-pod']), sent: messages.length, server: got, code: r.code });
    out.ok = r.code === 'OK' && got.count === messages.length &&
      got.bytes === sizes.reduce((a, b) => a + b, 0) && got.sha256 === expected;
  }

  async serverStream(out, n, size, seed) {
    const call = this.client.ServerStream(Buffer.from(JSON.stringify({ n, size, seed })),
      metadataOf([['x-call-id', this.callId('ss')]]), this.options(this.timeout()));
    const r = await this.collect(call, n);
    const bad = [];
    r.messages.forEach((m, i) => { if (!m.equals(blob(size, seed + i)) && bad.length < 10) bad.push(i); });
    Object.assign(out, { pod: str(r.initial['x-pod']), expected: n, received: r.messages.length,
      bad, code: r.code });
    out.ok = r.messages.length === n && !bad.length && r.code === 'OK' && Boolean(out.pod) &&
      str(r.trailing['x-pod']) === out.pod;
  }

  async sBidiPingPong(out) {
    // The next message is sent only once the previous echo came back: a proxy that waits
    // for the whole request before it forwards anything stalls here.
    const n = 40;
    const messages = [];
    for (let i = 0; i < n; i++) messages.push(blob(1 + i * 331, 4000 + i));
    const call = this.client.Bidi(metadataOf([['x-call-id', this.callId('bp')]]), this.options(this.timeout()));
    const bad = [];
    let got = 0;
    call.on('data', (echo) => {
      if (got >= n || !echo.equals(messages[got])) bad.push(got);
      got++;
      if (got < n) call.write(messages[got]);
      else if (got === n) call.end();
    });
    const status = new Promise((resolve) => {
      const o = { initial: {} };
      call.on('metadata', (m) => { o.initial = mdMap(m); });
      call.on('error', () => {});
      call.on('status', (s) => { o.code = CODE_NAMES[s.code]; resolve(o); });
    });
    call.write(messages[0]);
    const r = await status;
    Object.assign(out, { pod: str(r.initial['x-pod']), expected: n, received: got, bad: bad.slice(0, 10), code: r.code });
    out.ok = got === n && !bad.length && r.code === 'OK';
  }

  async sBidiBulk(out) {
    const n = 64, size = 256 * 1024;
    const messages = [];
    for (let i = 0; i < n; i++) messages.push(blob(size, 5000 + i));
    const call = this.client.Bidi(metadataOf([['x-call-id', this.callId('bb')]]), this.options(this.timeout()));
    const done = this.collect(call, n);
    this.writeAll(call, messages);
    const r = await done;
    const bad = [];
    r.messages.forEach((m, i) => { if ((i >= n || !m.equals(messages[i])) && bad.length < 10) bad.push(i); });
    Object.assign(out, { pod: str(r.initial['x-pod']), expected: n, received: r.messages.length, bad, code: r.code });
    out.ok = r.messages.length === n && !bad.length && r.code === 'OK';
  }

  // --- cancellation and deadlines --------------------------------------------------------------

  // Cancels three calls once the server is known to be working on them (its headers arrived,
  // or a message came back); reports the unix time of each cancel().
  async cancel(res) {
    const out = {};
    const sleep = String(this.o.sleepMs || 10000);
    const record = (kind, cid, r, tCancel, extra) => {
      const entry = { id: cid, t_cancel: tCancel, pod: str(r.initial['x-pod']), code: r.code, ...extra };
      out[kind] = entry;
      res.check(entry.code === 'CANCELLED', `${kind}: ended ${entry.code}, not CANCELLED`);
      if ('first_ok' in entry) res.check(entry.first_ok, `${kind}: the first message differs`);
      res.countPod(entry.pod);
    };

    { // unary: the server sends its headers, then sleeps
      const cid = this.callId('cu');
      let tCancel = null;
      const r = await this.unary(Buffer.from('wait'), [['x-call-id', cid], ['x-sleep-ms', sleep]],
        this.timeout(), (call) => {
          // headers came: the handler runs
          call.on('metadata', () => { tCancel = unixNow(); call.cancel(); });
        });
      record('unary', cid, r, tCancel, {});
    }
    { // server stream: one message came, the server sleeps before the next
      const cid = this.callId('cs');
      const call = this.client.ServerStream(Buffer.from(JSON.stringify({ n: 100, size: 100, seed: 0 })),
        metadataOf([['x-call-id', cid], ['x-sleep-ms', sleep]]), this.options(this.timeout()));
      let tCancel = null, firstOk = false;
      call.once('data', (m) => { firstOk = m.equals(blob(100, 0)); tCancel = unixNow(); call.cancel(); });
      const r = await this.collect(call, 100);
      record('server_stream', cid, r, tCancel, { first_ok: firstOk });
    }
    { // bidi: one echo came, the client holds its side open
      const cid = this.callId('cb');
      const call = this.client.Bidi(metadataOf([['x-call-id', cid]]), this.options(this.timeout()));
      let tCancel = null, firstOk = false;
      call.once('data', (m) => { firstOk = m.toString() === 'one'; tCancel = unixNow(); call.cancel(); });
      const r = this.collect(call, 100);
      call.write(Buffer.from('one'));
      record('bidi', cid, await r, tCancel, { first_ok: firstOk });
    }
    res.cancelled = out;
  }

  async deadline(res) {
    const cid = this.callId('dl');
    const tStart = unixNow();
    const t0 = monoNow();
    const r = await this.unary(Buffer.from('slow'),
      [['x-call-id', cid], ['x-sleep-ms', String(this.o.sleepMs || 2000)]], this.o.deadlineMs / 1000);
    const elapsed = monoNow() - t0;
    Object.assign(res, { id: cid, code: r.code, details: r.details, t_start: tStart,
      elapsed_ms: round(elapsed * 1000, 0.1), deadline_ms: this.o.deadlineMs });
    res.check(r.code === 'DEADLINE_EXCEEDED', `ended ${r.code} (${r.details}), not DEADLINE_EXCEEDED`);
  }

  // --- metadata, trailers, errors ------------------------------------------------------------

  async metadata(res) {
    const binary = Buffer.alloc(512);
    for (let i = 0; i < 512; i++) binary[i] = i % 256;
    const sent = [['x-echo-color', 'blue'], ['x-echo-blob-bin', binary],
      ['x-echo-empty-bin', Buffer.alloc(0)], ['x-echo-long', 'v'.repeat(4000)],
      ['x-echo-spaces', 'a b  c']];
    const cases = {};
    const checkEcho = (name, ini, tr, wantInitial) => {
      let ok = true;
      for (const [k, v] of sent) {
        if (wantInitial) ok = res.check(same(ini[k], v), `${name}: initial ${k} = ${str(ini[k])?.slice(0, 60)}`) && ok;
        const tk = 'x-trail-' + k.slice('x-echo-'.length);
        ok = res.check(same(tr[tk], v), `${name}: trailer ${tk} = ${str(tr[tk])?.slice(0, 60)}`) && ok;
      }
      return res.check(tr['x-pod'], `${name}: no x-pod trailer`) && ok;
    };

    { // an OK call: echoes in headers and trailers, x-pod in both
      const r = await this.unary(Buffer.from('md'), [['x-call-id', this.callId('md')], ...sent], this.timeout());
      let ok = res.check(r.code === 'OK', `ok_call: ${r.code} ${r.details}`);
      ok = checkEcho('ok_call', r.initial, r.trailing, true) && ok;
      ok = res.check(r.initial['x-pod'] && r.initial['x-pod'] === r.trailing['x-pod'],
        `ok_call: x-pod header ${r.initial['x-pod']} vs trailer ${r.trailing['x-pod']}`) && ok;
      ok = res.check(r.response && r.response.toString() === 'md', 'ok_call: response differs') && ok;
      cases.ok_call = { ok, pod: str(r.initial['x-pod']), code: r.code };
    }

    // errors: trailers-only, and after headers
    const message = 'no such key: k\u00e9y \u2603 100% done, \r\n and a newline';
    for (const [name, status, first] of [['trailers_only_error', 'NOT_FOUND', false],
      ['error_after_headers', 'PERMISSION_DENIED', true]]) {
      const md = [['x-call-id', this.callId('me')], ['x-status', status],
        ['x-message-bin', Buffer.from(message, 'utf8')], ...sent];
      if (first) md.push(['x-headers-first', '1']);
      const r = await this.unary(Buffer.from('err'), md, this.timeout());
      let ok = res.check(r.code === status, `${name}: code ${r.code}, not ${status}`);
      ok = res.check(r.details === message, `${name}: message ${JSON.stringify(r.details)}, not ${JSON.stringify(message)}`) && ok;
      ok = checkEcho(name, r.initial, r.trailing, first) && ok;
      if (first) {
        ok = res.check(r.initial['x-pod'], `${name}: no x-pod in the headers`) && ok;
      } else {
        // The server sent no headers at all: nothing may appear as initial metadata.
        ok = res.check(!('x-pod' in r.initial) && !('x-echo-color' in r.initial),
          `${name}: initial metadata in a trailers-only answer: ${Object.keys(r.initial)}`) && ok;
      }
      cases[name] = { ok, pod: str(r.trailing['x-pod']), code: r.code, details: r.details,
        initial_keys: Object.keys(r.initial).sort() };
    }
    for (const c of Object.values(cases)) res.countPod(c.pod);
    res.cases = cases;
  }
}

const SCENARIOS = {
  unary: (d, r) => d.unaryScenario(r),
  streams: (d, r) => d.streams(r),
  cancel: (d, r) => d.cancel(r),
  deadline: (d, r) => d.deadline(r),
  metadata: (d, r) => d.metadata(r),
  'during-kill': (d, r) => d.duringKill(r),
};

async function main() {
  let o;
  try {
    o = parseArgs(process.argv.slice(2));
    if (!SCENARIOS[o.scenario]) throw new Error(`unknown scenario ${o.scenario}`);
  } catch (e) {
    process.stderr.write(`client.js: ${e.message}\nusage: client.js TARGET {${Object.keys(SCENARIOS).join('|')}} [options]\n`);
    process.exit(2);
  }
  const res = new Result(o);
  const t0 = monoNow();
  // Bounded like every load loop: a run that outlives its own limit reports and ends.
  const guard = setTimeout(() => {
    res.failures.push('the run outlived --max-seconds');
    process.stdout.write(JSON.stringify(res) + '\n', () => process.exit(1));
  }, (Math.min(o.maxSeconds, MAX_SECONDS) + 15) * 1000);
  let driver = null;
  try {
    driver = new Driver(o);
    await SCENARIOS[o.scenario](driver, res);
  } catch (e) {
    res.failures.push(`${e.name}: ${e.message}`);
  } finally {
    if (driver) driver.close();
  }
  clearTimeout(guard);
  if (res.elapsed_s === undefined) res.elapsed_s = round(monoNow() - t0, 0.001);
  res.ok = res.failures.length === 0;
  process.stdout.write(JSON.stringify(res) + '\n', () => process.exit(0));
}

main();
