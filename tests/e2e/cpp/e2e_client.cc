// e2e_client: a gRPC test driver on C++ libgrpc++ run inside a client Pod: ONE channel to
// TARGET, one named scenario, bounded in count and time, one JSON object on stdout.
//
//     e2e_client TARGET unary        [--count N] [--concurrency C] [--sleep-ms S]
//     e2e_client TARGET streams      all four kinds of call, with content checks
//     e2e_client TARGET cancel       cancel a unary, a server stream and a bidi call mid-way
//     e2e_client TARGET deadline     [--deadline-ms D] [--sleep-ms S]: DEADLINE_EXCEEDED
//     e2e_client TARGET metadata     ascii and -bin metadata both ways, trailers, errors
//     e2e_client TARGET during-kill  [--seconds T] [--concurrency C] [--sleep-ms S]
//
// The same scenarios, options and result fields as tests/grpc/client.py (the python3-grpcio
// driver), so that one test asserts the same things of every stack. It speaks the raw-bytes
// contract of tests/grpc/echo_service.py through grpc::GenericStub: no protobuf, no codegen.
// The deterministic payloads of echo_service.blob() are Python's random.Random(seed)
// .randbytes(n), so this file carries CPython's MT19937 seeding to make the same bytes.

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <openssl/evp.h>

#include <unistd.h>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

namespace {

const std::string kPrefix = "/spindle.test.Echo/";
const std::string kUnary = kPrefix + "Unary";
const std::string kClientStream = kPrefix + "ClientStream";
const std::string kServerStream = kPrefix + "ServerStream";
const std::string kBidi = kPrefix + "Bidi";

constexpr int kMaxMessage = 16 * 1024 * 1024 + 64 * 1024;  // echo_service.MAX_MESSAGE
constexpr long kMaxCount = 100000;
constexpr int kMaxConcurrency = 64;
constexpr double kMaxSeconds = 120.0;

// --- time ------------------------------------------------------------------------------------

double unixNow() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double monoNow() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::chrono::system_clock::time_point after(double seconds) {
  return std::chrono::system_clock::now() +
         std::chrono::duration_cast<std::chrono::system_clock::duration>(
             std::chrono::duration<double>(seconds));
}

double rounded(double v, double unit) { return static_cast<double>(std::llround(v / unit)) * unit; }

// --- echo_service.blob(n, seed): CPython's random.Random(seed).randbytes(n) ---------------

class PyRandom {
 public:
  // random.seed(int) for 0 <= seed < 2**32: init_by_array with the one-word key [seed].
  explicit PyRandom(uint32_t seed) {
    initGenrand(19650218U);
    uint32_t i = 1;
    for (uint32_t k = kN; k > 0; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525U)) + seed;
      if (++i >= kN) {
        mt_[0] = mt_[kN - 1];
        i = 1;
      }
    }
    for (uint32_t k = kN - 1; k > 0; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941U)) - i;
      if (++i >= kN) {
        mt_[0] = mt_[kN - 1];
        i = 1;
      }
    }
    mt_[0] = 0x80000000U;
  }

  // getrandbits(8 n).to_bytes(n, "little"): 32-bit words, least significant first; the last,
  // partial word keeps its most significant bits.
  std::string bytes(size_t n) {
    std::string out(n, '\0');
    for (size_t pos = 0; pos < n; pos += 4) {
      uint32_t r = next();
      const size_t take = std::min<size_t>(4, n - pos);
      if (take < 4) r >>= 32 - 8 * take;
      for (size_t b = 0; b < take; ++b) out[pos + b] = static_cast<char>((r >> (8 * b)) & 0xffU);
    }
    return out;
  }

 private:
  static constexpr uint32_t kN = 624;
  static constexpr uint32_t kM = 397;

  void initGenrand(uint32_t s) {
    mt_[0] = s;
    for (uint32_t i = 1; i < kN; ++i) mt_[i] = 1812433253U * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + i;
    index_ = kN;
  }

  uint32_t next() {
    if (index_ >= kN) {
      for (uint32_t k = 0; k < kN; ++k) {
        const uint32_t y = (mt_[k] & 0x80000000U) | (mt_[(k + 1) % kN] & 0x7fffffffU);
        mt_[k] = mt_[(k + kM) % kN] ^ (y >> 1) ^ ((y & 1U) != 0 ? 0x9908b0dfU : 0U);
      }
      index_ = 0;
    }
    uint32_t y = mt_[index_++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= y >> 18;
    return y;
  }

  std::array<uint32_t, kN> mt_{};
  uint32_t index_ = kN;
};

std::string blob(size_t n, uint32_t seed) { return n > 0 ? PyRandom(seed).bytes(n) : ""; }

std::string sha256Hex(const std::string& data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += kHex[md[i] >> 4];
    out += kHex[md[i] & 0xf];
  }
  return out;
}

// --- JSON out (keys sorted, as client.py's json.dumps(sort_keys=True)) ----------------------

class Json {
 public:
  Json() = default;
  Json(bool v) : kind_(Kind::kBool), b_(v) {}
  Json(int v) : kind_(Kind::kInt), i_(v) {}
  Json(long v) : kind_(Kind::kInt), i_(v) {}
  Json(size_t v) : kind_(Kind::kInt), i_(static_cast<long>(v)) {}
  Json(double v) : kind_(Kind::kNum), d_(v) {}
  Json(const char* v) : kind_(Kind::kStr), s_(v) {}
  Json(std::string v) : kind_(Kind::kStr), s_(std::move(v)) {}

  static Json array() {
    Json j;
    j.kind_ = Kind::kArr;
    return j;
  }
  static Json object() {
    Json j;
    j.kind_ = Kind::kObj;
    return j;
  }

  Json& operator[](const std::string& key) {
    kind_ = Kind::kObj;
    return o_[key];
  }
  bool has(const std::string& key) const { return o_.count(key) != 0; }
  bool flag(const std::string& key) const {
    auto it = o_.find(key);
    return it != o_.end() && it->second.kind_ == Kind::kBool && it->second.b_;
  }
  void push(Json v) {
    kind_ = Kind::kArr;
    a_.push_back(std::move(v));
  }
  size_t size() const { return kind_ == Kind::kArr ? a_.size() : o_.size(); }
  const std::vector<Json>& items() const { return a_; }

  std::string dump() const {
    std::string out;
    write(out);
    return out;
  }

 private:
  enum class Kind { kNull, kBool, kInt, kNum, kStr, kArr, kObj };

  static void quote(std::string& out, const std::string& s) {
    out += '"';
    for (char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else if (u < 0x20 || u == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\u%04x", u);
        out += buf;
      } else {
        out += c;  // UTF-8 passes through
      }
    }
    out += '"';
  }

  void write(std::string& out) const {
    switch (kind_) {
      case Kind::kNull: out += "null"; break;
      case Kind::kBool: out += b_ ? "true" : "false"; break;
      case Kind::kInt: out += std::to_string(i_); break;
      case Kind::kNum: {
        char buf[40];
        std::snprintf(buf, sizeof buf, "%.6f", d_);
        out += buf;
        break;
      }
      case Kind::kStr: quote(out, s_); break;
      case Kind::kArr: {
        out += '[';
        for (size_t i = 0; i < a_.size(); ++i) {
          if (i) out += ", ";
          a_[i].write(out);
        }
        out += ']';
        break;
      }
      case Kind::kObj: {
        out += '{';
        bool first = true;
        for (const auto& [k, v] : o_) {
          if (!first) out += ", ";
          first = false;
          quote(out, k);
          out += ": ";
          v.write(out);
        }
        out += '}';
        break;
      }
    }
  }

  Kind kind_ = Kind::kNull;
  bool b_ = false;
  long i_ = 0;
  double d_ = 0;
  std::string s_;
  std::vector<Json> a_;
  std::map<std::string, Json> o_;
};

// The raw text of a number or string field in the flat JSON the server answers ClientStream
// with ({"count": 3, "bytes": 10, "sha256": "...", "pod": "b1"}); "" when absent.
std::string jsonField(const std::string& text, const std::string& key) {
  const std::string needle = "\"" + key + "\":";
  auto pos = text.find(needle);
  if (pos == std::string::npos) return "";
  pos += needle.size();
  while (pos < text.size() && text[pos] == ' ') ++pos;
  if (pos < text.size() && text[pos] == '"') {
    const auto end = text.find('"', pos + 1);
    return end == std::string::npos ? "" : text.substr(pos + 1, end - pos - 1);
  }
  const auto end = text.find_first_of(",}", pos);
  return text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
}

// --- gRPC helpers ---------------------------------------------------------------------------

const char* codeName(grpc::StatusCode code) {
  static const char* kNames[] = {"OK",
                                 "CANCELLED",
                                 "UNKNOWN",
                                 "INVALID_ARGUMENT",
                                 "DEADLINE_EXCEEDED",
                                 "NOT_FOUND",
                                 "ALREADY_EXISTS",
                                 "PERMISSION_DENIED",
                                 "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION",
                                 "ABORTED",
                                 "OUT_OF_RANGE",
                                 "UNIMPLEMENTED",
                                 "INTERNAL",
                                 "UNAVAILABLE",
                                 "DATA_LOSS",
                                 "UNAUTHENTICATED"};
  const auto i = static_cast<int>(code);
  return i >= 0 && i < 17 ? kNames[i] : "UNKNOWN_CODE";
}

grpc::ByteBuffer toBuffer(const std::string& s) {
  grpc::Slice slice(s);
  return grpc::ByteBuffer(&slice, 1);
}

std::string fromBuffer(const grpc::ByteBuffer& buf) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buf.Dump(&slices).ok()) return out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

using Metadata = std::vector<std::pair<std::string, std::string>>;
using MdMap = std::map<std::string, std::string>;

// The last value of each key, as client.py's {k: v for k, v in md}.
MdMap toMap(const std::multimap<grpc::string_ref, grpc::string_ref>& md) {
  MdMap out;
  for (const auto& [k, v] : md)
    out[std::string(k.data(), k.size())] = std::string(v.data(), v.size());
  return out;
}

std::string get(const MdMap& md, const std::string& key) {
  auto it = md.find(key);
  return it == md.end() ? "" : it->second;
}

struct Options {
  std::string target;
  std::string scenario;
  long count = 100;
  int concurrency = 1;
  int sleepMs = 0;
  double seconds = 4.0;
  int deadlineMs = 200;
  double timeout = 30.0;
  double maxSeconds = 90.0;
  bool appDefaults = false;  // keep gRPC's default (transparent) retries, as apps run
  std::string run = "c" + std::to_string(getpid());
};

// One streaming call driven step by step: every operation is waited for on the call's own
// completion queue, so a scenario reads like the synchronous client.py.
class Call {
 public:
  Call(grpc::GenericStub& stub, const std::string& method, const Metadata& md, double timeout) {
    for (const auto& [k, v] : md) ctx_.AddMetadata(k, v);
    ctx_.set_deadline(after(timeout));
    rw_ = stub.PrepareCall(&ctx_, method, &cq_);
    rw_->StartCall(tag(1));
    wait();
  }

  ~Call() {
    if (!finished_) {
      ctx_.TryCancel();
      finish();
    }
    cq_.Shutdown();
    void* t = nullptr;
    bool ok = false;
    while (cq_.Next(&t, &ok)) {
    }
  }

  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;

  bool write(const std::string& msg) {
    rw_->Write(toBuffer(msg), tag(2));
    return wait();
  }
  bool writesDone() {
    rw_->WritesDone(tag(3));
    return wait();
  }
  bool readInitialMetadata() {
    rw_->ReadInitialMetadata(tag(4));
    return wait();
  }
  bool read(std::string* msg) {
    grpc::ByteBuffer buf;
    rw_->Read(&buf, tag(5));
    if (!wait()) return false;
    *msg = fromBuffer(buf);
    return true;
  }
  grpc::Status finish() {
    rw_->Finish(&status_, tag(6));
    wait();
    finished_ = true;
    return status_;
  }
  void cancel() { ctx_.TryCancel(); }

  // Writes all of msgs while reading the echoes, one write and one read in flight at once:
  // a bulk stream larger than any window moves only if both directions keep going.
  std::vector<std::string> writeAllReadAll(const std::vector<std::string>& msgs, size_t expect) {
    std::vector<std::string> got;
    size_t sent = 0;
    bool writing = false, reading = false, closed = false, done_reading = false;
    grpc::ByteBuffer in;
    auto startWrite = [&] {
      if (sent < msgs.size()) {
        rw_->Write(toBuffer(msgs[sent++]), tag(2));
        writing = true;
      } else if (!closed) {
        rw_->WritesDone(tag(3));
        writing = closed = true;
      }
    };
    startWrite();
    rw_->Read(&in, tag(5));
    reading = true;
    while (writing || reading) {
      void* t = nullptr;
      bool ok = false;
      if (!cq_.Next(&t, &ok)) break;
      const auto which = reinterpret_cast<intptr_t>(t);
      if (which == 2 || which == 3) {
        writing = false;
        if (ok) startWrite();
      } else if (which == 5) {
        reading = false;
        if (!ok) {
          done_reading = true;
          continue;
        }
        got.push_back(fromBuffer(in));
        if (got.size() <= expect && !done_reading) {
          rw_->Read(&in, tag(5));
          reading = true;
        }
      }
    }
    return got;
  }

  MdMap initial() const { return toMap(ctx_.GetServerInitialMetadata()); }
  MdMap trailing() const { return toMap(ctx_.GetServerTrailingMetadata()); }

 private:
  static void* tag(intptr_t n) { return reinterpret_cast<void*>(n); }

  bool wait() {
    void* t = nullptr;
    bool ok = false;
    if (!cq_.Next(&t, &ok)) return false;
    return ok;
  }

  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> rw_;
  grpc::Status status_;
  bool finished_ = false;
};

// What one unary call ended with.
struct UnaryResult {
  grpc::Status status;
  std::string response;
  MdMap initial, trailing;
};

class Result {
 public:
  explicit Result(const Options& o) {
    j_ = Json::object();
    j_["ok"] = false;
    j_["scenario"] = o.scenario;
    j_["target"] = o.target;
    j_["run"] = o.run;
    j_["stack"] = "cpp";
    j_["grpc_version"] = grpc::Version();
    j_["pods"] = Json::object();
    j_["errors"] = Json::object();
  }

  bool check(bool cond, const std::string& what) {
    if (!cond) failures_.push_back(what);
    return cond;
  }
  void countPod(const std::string& pod) {
    if (!pod.empty()) pods_[pod]++;
  }
  Json& operator[](const std::string& key) { return j_[key]; }
  std::map<std::string, long>& pods() { return pods_; }
  std::map<std::string, long>& errors() { return errors_; }

  std::string finish(double elapsed) {
    Json f = Json::array();
    for (const auto& s : failures_) f.push(s);
    j_["failures"] = f;
    for (const auto& [k, v] : pods_) j_["pods"][k] = v;
    for (const auto& [k, v] : errors_) j_["errors"][k] = v;
    if (!j_.has("elapsed_s")) j_["elapsed_s"] = rounded(elapsed, 0.001);
    j_["ok"] = failures_.empty();
    return j_.dump();
  }

 private:
  Json j_;
  std::vector<std::string> failures_;
  std::map<std::string, long> pods_, errors_;
};

class Driver {
 public:
  explicit Driver(const Options& o)
      : o_(o), t_end_(monoNow() + std::min(o.maxSeconds, kMaxSeconds)) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(kMaxMessage);
    args.SetMaxSendMessageSize(kMaxMessage);
    // What the test sees is what the path under test did: no client-side retries, unless
    // the test asks for an app's defaults.
    if (!o.appDefaults) args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);
    channel_ = grpc::CreateCustomChannel(o.target, grpc::InsecureChannelCredentials(), args);
    stub_ = std::make_unique<grpc::GenericStub>(channel_);
  }

  double left() const { return std::max(0.1, t_end_ - monoNow()); }
  double timeout() const { return std::min(o_.timeout, left()); }

  std::string callId(const std::string& kind) {
    return o_.run + "-" + kind + "-" + std::to_string(++ids_);
  }

  // One unary call on the given completion queue (each load thread has its own).
  UnaryResult unary(grpc::CompletionQueue& cq, const std::string& request, const Metadata& md,
                    double timeout, const std::string& method = kUnary) {
    grpc::ClientContext ctx;
    for (const auto& [k, v] : md) ctx.AddMetadata(k, v);
    ctx.set_deadline(after(timeout));
    auto rpc = stub_->PrepareUnaryCall(&ctx, method, toBuffer(request), &cq);
    rpc->StartCall();
    grpc::ByteBuffer response;
    UnaryResult r;
    rpc->Finish(&response, &r.status, reinterpret_cast<void*>(1));
    void* t = nullptr;
    bool ok = false;
    cq.Next(&t, &ok);
    r.response = fromBuffer(response);
    r.initial = toMap(ctx.GetServerInitialMetadata());
    r.trailing = toMap(ctx.GetServerTrailingMetadata());
    return r;
  }

  // --- unary load ---------------------------------------------------------------------------

  struct Record {
    std::string id;
    double t0, t1;
    std::string code, pod;
  };

  void load(Result& res, long count, double seconds, bool records) {
    std::mutex lock;
    std::map<std::string, std::string> details;
    std::vector<std::string> mismatches;
    std::vector<Record> calls;
    std::atomic<long> numbers{0};
    const double stop_at = seconds > 0 ? monoNow() + seconds : 0;
    Metadata extra;
    if (o_.sleepMs) extra.emplace_back("x-sleep-ms", std::to_string(o_.sleepMs));

    auto worker = [&] {
      grpc::CompletionQueue cq;
      for (long n = 0; n < count; ++n) {
        if (monoNow() >= t_end_ || (stop_at > 0 && monoNow() >= stop_at)) break;
        const long i = numbers++;
        if (i >= count) break;
        std::string cid;
        {
          std::lock_guard<std::mutex> g(lock);
          cid = callId("u");
        }
        Metadata md{{"x-call-id", cid}};
        md.insert(md.end(), extra.begin(), extra.end());
        const std::string request = "ping " + std::to_string(i);
        const double t0 = unixNow();
        auto r = unary(cq, request, md, timeout());
        const double t1 = unixNow();
        std::string code = codeName(r.status.error_code());
        const std::string pod = get(r.initial, "x-pod");
        if (r.status.ok() && r.response != request) code = "MISMATCH";
        std::lock_guard<std::mutex> g(lock);
        if (code == "OK") {
          res.pods()[pod]++;
        } else if (code == "MISMATCH") {
          mismatches.push_back(cid);
        } else {
          res.errors()[code]++;
          details.emplace(code, r.status.error_message());
        }
        if (records) calls.push_back({cid, t0, t1, code, pod});
      }
      cq.Shutdown();
      void* t = nullptr;
      bool ok = false;
      while (cq.Next(&t, &ok)) {
      }
    };

    const double t0 = monoNow();
    std::vector<std::thread> threads;
    for (int k = 0; k < std::clamp(o_.concurrency, 1, kMaxConcurrency); ++k)
      threads.emplace_back(worker);
    for (auto& t : threads) t.join();  // every call has a deadline: the joins are bounded
    res["elapsed_s"] = rounded(monoNow() - t0, 0.001);
    Json d = Json::object();
    for (const auto& [k, v] : details) d[k] = v;
    res["error_details"] = d;
    long ok = 0, failed = 0;
    for (const auto& [k, v] : res.pods()) ok += v;
    for (const auto& [k, v] : res.errors()) failed += v;
    res["calls_ok"] = ok;
    res["calls_done"] = ok + failed + static_cast<long>(mismatches.size());
    Json mm = Json::array();
    for (size_t i = 0; i < mismatches.size() && i < 10; ++i) mm.push(mismatches[i]);
    res["mismatches"] = mm;
    if (records) {
      std::sort(calls.begin(), calls.end(),
                [](const Record& a, const Record& b) { return a.t0 < b.t0; });
      Json list = Json::array();
      for (const auto& c : calls) {
        Json row = Json::array();
        row.push(c.id);
        row.push(rounded(c.t0, 1e-6));
        row.push(rounded(c.t1, 1e-6));
        row.push(c.code);
        row.push(c.pod.empty() ? Json() : Json(c.pod));
        list.push(row);
      }
      res["calls"] = list;
    }
  }

  void unaryScenario(Result& res) {
    const long count = std::min(o_.count, kMaxCount);
    load(res, count, 0, false);
    res.check(res.errors().empty(), "calls failed");
    long done = 0;
    for (const auto& [k, v] : res.pods()) done += v;
    for (const auto& [k, v] : res.errors()) done += v;
    res.check(done == count, "only " + std::to_string(done) + " of " + std::to_string(count) +
                                 " calls done in time (or responses differ)");
  }

  void duringKill(Result& res) { load(res, kMaxCount, o_.seconds, true); }

  // --- the four kinds, with content checks --------------------------------------------------------

  void streams(Result& res) {
    Json kinds = Json::object();
    const std::vector<std::pair<std::string, std::function<void(Json&)>>> cases = {
        {"unary", [&](Json& out) { sUnary(out); }},
        {"client_stream", [&](Json& out) { sClientStream(out); }},
        {"server_stream", [&](Json& out) { serverStream(out, 50, 10000, 2000); }},
        // 64 x 256 KiB: many times any stream window, so flow control must move it along.
        {"server_stream_16mib", [&](Json& out) { serverStream(out, 64, 256 * 1024, 3000); }},
        {"bidi_ping_pong", [&](Json& out) { sBidiPingPong(out); }},
        {"bidi_bulk_16mib", [&](Json& out) { sBidiBulk(out); }},
    };
    for (const auto& [name, fn] : cases) {
      const double t0 = monoNow();
      Json out = Json::object();
      out["ok"] = false;
      fn(out);
      out["ms"] = rounded((monoNow() - t0) * 1000, 0.1);
      res.check(out.flag("ok"), name + ": " + out.dump().substr(0, 400));
      kinds[name] = out;
    }
    res["kinds"] = kinds;
  }

  void sUnary(Json& out) {
    const std::string request = blob(100000, 11);
    grpc::CompletionQueue cq;
    auto r = unary(cq, request, {{"x-call-id", callId("su")}}, timeout());
    cq.Shutdown();
    out["pod"] = get(r.initial, "x-pod");
    out["code"] = codeName(r.status.error_code());
    out["ok"] = r.status.ok() && r.response == request &&
                get(r.trailing, "x-req-sha256") == sha256Hex(request);
    if (!r.status.ok()) out["error"] = r.status.error_message();
    pods_seen_.push_back(get(r.initial, "x-pod"));
  }

  void sClientStream(Json& out) {
    std::vector<size_t> sizes;
    for (size_t i = 0; i < 50; ++i) sizes.push_back((i * 7919) % 30000 + 1);
    for (size_t n : {size_t{0}, size_t{1}, size_t{65536}, size_t{1000000}}) sizes.push_back(n);
    Call call(*stub_, kClientStream, {{"x-call-id", callId("cs")}}, timeout());
    std::string all;
    size_t total = 0;
    bool wrote = true;
    for (size_t i = 0; i < sizes.size(); ++i) {
      const std::string m = blob(sizes[i], static_cast<uint32_t>(1000 + i));
      all += m;
      total += m.size();
      wrote = wrote && call.write(m);
    }
    wrote = wrote && call.writesDone();
    std::string response;
    const bool got = call.read(&response);
    const auto status = call.finish();
    const auto pod = get(call.initial(), "x-pod");
    out["pod"] = pod;
    out["sent"] = sizes.size();
    out["server"] = response;
    out["code"] = codeName(status.error_code());
    out["ok"] = wrote && got && status.ok() &&
                jsonField(response, "count") == std::to_string(sizes.size()) &&
                jsonField(response, "bytes") == std::to_string(total) &&
                jsonField(response, "sha256") == sha256Hex(all);
    pods_seen_.push_back(pod);
  }

  void serverStream(Json& out, size_t n, size_t size, uint32_t seed) {
    const std::string spec = "{\"n\": " + std::to_string(n) +
                             ", \"size\": " + std::to_string(size) +
                             ", \"seed\": " + std::to_string(seed) + "}";
    Call call(*stub_, kServerStream, {{"x-call-id", callId("ss")}}, timeout());
    call.write(spec);
    call.writesDone();
    size_t got = 0;
    Json bad = Json::array();
    std::string m;
    while (got <= n && call.read(&m)) {
      if (m != blob(size, seed + static_cast<uint32_t>(got)) && bad.size() < 10) bad.push(got);
      ++got;
    }
    const auto status = call.finish();
    const auto pod = get(call.initial(), "x-pod");
    out["pod"] = pod;
    out["expected"] = n;
    out["received"] = got;
    out["bad"] = bad;
    out["code"] = codeName(status.error_code());
    out["ok"] = got == n && bad.size() == 0 && status.ok() && !pod.empty() &&
                get(call.trailing(), "x-pod") == pod;
    pods_seen_.push_back(pod);
  }

  void sBidiPingPong(Json& out) {
    // The next message is sent only once the previous echo came back: a proxy that waits for
    // the whole request before it forwards anything stalls here.
    const size_t n = 40;
    Call call(*stub_, kBidi, {{"x-call-id", callId("bp")}}, timeout());
    size_t got = 0;
    Json bad = Json::array();
    for (size_t i = 0; i < n; ++i) {
      const std::string m = blob(1 + i * 331, static_cast<uint32_t>(4000 + i));
      std::string echo;
      if (!call.write(m) || !call.read(&echo)) break;
      ++got;
      if (echo != m) bad.push(i);
    }
    call.writesDone();
    std::string extra;
    const bool more = call.read(&extra);
    const auto status = call.finish();
    const auto pod = get(call.initial(), "x-pod");
    out["pod"] = pod;
    out["expected"] = n;
    out["received"] = got + (more ? 1 : 0);
    out["bad"] = bad;
    out["code"] = codeName(status.error_code());
    out["ok"] = got == n && !more && bad.size() == 0 && status.ok();
    pods_seen_.push_back(pod);
  }

  void sBidiBulk(Json& out) {
    const size_t n = 64, size = 256 * 1024;
    std::vector<std::string> msgs;
    for (size_t i = 0; i < n; ++i) msgs.push_back(blob(size, static_cast<uint32_t>(5000 + i)));
    Call call(*stub_, kBidi, {{"x-call-id", callId("bb")}}, timeout());
    const auto echoes = call.writeAllReadAll(msgs, n);
    Json bad = Json::array();
    for (size_t i = 0; i < echoes.size(); ++i)
      if ((i >= n || echoes[i] != msgs[i]) && bad.size() < 10) bad.push(i);
    const auto status = call.finish();
    const auto pod = get(call.initial(), "x-pod");
    out["pod"] = pod;
    out["expected"] = n;
    out["received"] = echoes.size();
    out["bad"] = bad;
    out["code"] = codeName(status.error_code());
    out["ok"] = echoes.size() == n && bad.size() == 0 && status.ok();
    pods_seen_.push_back(pod);
  }

  // --- cancellation and deadlines ---------------------------------------------------------------

  // Cancels three calls once the server is known to be working on them (its headers arrived,
  // or a message came back); reports the unix time of each cancel.
  void cancel(Result& res) {
    Json out = Json::object();
    const std::string sleep = std::to_string(o_.sleepMs ? o_.sleepMs : 10000);
    auto record = [&](const std::string& kind, const std::string& cid, Call& call, double t_cancel,
                      const grpc::Status& status, std::optional<bool> first_ok) {
      Json e = Json::object();
      e["id"] = cid;
      e["t_cancel"] = rounded(t_cancel, 1e-6);
      const auto pod = get(call.initial(), "x-pod");
      e["pod"] = pod.empty() ? Json() : Json(pod);
      e["code"] = codeName(status.error_code());
      if (first_ok) {
        e["first_ok"] = *first_ok;
        res.check(*first_ok, kind + ": the first message differs");
      }
      res.check(status.error_code() == grpc::StatusCode::CANCELLED,
                kind + ": ended " + codeName(status.error_code()) + ", not CANCELLED");
      res.countPod(pod);
      out[kind] = e;
    };

    {  // unary: the server sends its headers, then sleeps
      const auto cid = callId("cu");
      Call call(*stub_, kUnary, {{"x-call-id", cid}, {"x-sleep-ms", sleep}}, timeout());
      call.write("wait");
      call.writesDone();
      call.readInitialMetadata();  // headers came: the handler runs
      const double t = unixNow();
      call.cancel();
      const auto status = call.finish();
      record("unary", cid, call, t, status, std::nullopt);
    }
    {  // server stream: one message came, the server sleeps before the next
      const auto cid = callId("cs");
      Call call(*stub_, kServerStream, {{"x-call-id", cid}, {"x-sleep-ms", sleep}}, timeout());
      call.write("{\"n\": 100, \"size\": 100, \"seed\": 0}");
      call.writesDone();
      std::string first;
      const bool got = call.read(&first);
      const double t = unixNow();
      call.cancel();
      const auto status = call.finish();
      record("server_stream", cid, call, t, status, got && first == blob(100, 0));
    }
    {  // bidi: one echo came, the client holds its side open
      const auto cid = callId("cb");
      Call call(*stub_, kBidi, {{"x-call-id", cid}}, timeout());
      call.write("one");
      std::string first;
      const bool got = call.read(&first);
      const double t = unixNow();
      call.cancel();
      const auto status = call.finish();
      record("bidi", cid, call, t, status, got && first == "one");
    }
    res["cancelled"] = out;
  }

  void deadline(Result& res) {
    const auto cid = callId("dl");
    const double deadline = o_.deadlineMs / 1000.0;
    grpc::CompletionQueue cq;
    const double t_start = unixNow();
    const double t0 = monoNow();
    auto r =
        unary(cq, "slow",
              {{"x-call-id", cid}, {"x-sleep-ms", std::to_string(o_.sleepMs ? o_.sleepMs : 2000)}},
              deadline);
    const double elapsed = monoNow() - t0;
    cq.Shutdown();
    const std::string code = codeName(r.status.error_code());
    res["id"] = cid;
    res["code"] = code;
    res["details"] = r.status.error_message();
    res["t_start"] = rounded(t_start, 1e-6);
    res["elapsed_ms"] = rounded(elapsed * 1000, 0.1);
    res["deadline_ms"] = o_.deadlineMs;
    res.check(code == "DEADLINE_EXCEEDED",
              "ended " + code + " (" + r.status.error_message() + "), not DEADLINE_EXCEEDED");
  }

  // --- metadata, trailers, errors --------------------------------------------------------------

  void metadata(Result& res) {
    std::string binary;
    for (int rep = 0; rep < 2; ++rep)
      for (int b = 0; b < 256; ++b) binary += static_cast<char>(b);
    const Metadata sent = {{"x-echo-color", "blue"},
                           {"x-echo-blob-bin", binary},
                           {"x-echo-empty-bin", ""},
                           {"x-echo-long", std::string(4000, 'v')},
                           {"x-echo-spaces", "a b  c"}};
    Json cases = Json::object();

    auto checkEcho = [&](const std::string& name, const MdMap& ini, const MdMap& tr,
                         bool want_initial) {
      bool ok = true;
      for (const auto& [k, v] : sent) {
        if (want_initial) {
          auto it = ini.find(k);
          ok &= res.check(it != ini.end() && it->second == v,
                          name + ": initial " + k + " missing or differs");
        }
        const std::string tk = "x-trail-" + k.substr(7);
        auto it = tr.find(tk);
        ok &= res.check(it != tr.end() && it->second == v,
                        name + ": trailer " + tk + " missing or differs");
      }
      ok &= res.check(!get(tr, "x-pod").empty(), name + ": no x-pod trailer");
      return ok;
    };

    {  // an OK call: echoes in headers and trailers, x-pod in both
      grpc::CompletionQueue cq;
      Metadata md{{"x-call-id", callId("md")}};
      md.insert(md.end(), sent.begin(), sent.end());
      auto r = unary(cq, "md", md, timeout());
      cq.Shutdown();
      bool ok =
          res.check(r.status.ok(), "ok_call: " + std::string(codeName(r.status.error_code())) +
                                       " " + r.status.error_message());
      ok &= checkEcho("ok_call", r.initial, r.trailing, true);
      ok &= res.check(!get(r.initial, "x-pod").empty() &&
                          get(r.initial, "x-pod") == get(r.trailing, "x-pod"),
                      "ok_call: x-pod header " + get(r.initial, "x-pod") + " vs trailer " +
                          get(r.trailing, "x-pod"));
      ok &= res.check(r.response == "md", "ok_call: response differs");
      Json c = Json::object();
      c["ok"] = ok;
      c["pod"] = get(r.initial, "x-pod");
      c["code"] = codeName(r.status.error_code());
      cases["ok_call"] = c;
      res.countPod(get(r.initial, "x-pod"));
    }

    // errors: trailers-only, and after headers
    const std::string message =
        "no such key: k\xc3\xa9y \xe2\x98\x83 100% done, \r\n and a newline";
    for (const auto& [name, status, first] :
         {std::tuple<std::string, std::string, bool>{"trailers_only_error", "NOT_FOUND", false},
          std::tuple<std::string, std::string, bool>{"error_after_headers", "PERMISSION_DENIED",
                                                     true}}) {
      grpc::CompletionQueue cq;
      Metadata md{{"x-call-id", callId("me")}, {"x-status", status}, {"x-message-bin", message}};
      md.insert(md.end(), sent.begin(), sent.end());
      if (first) md.emplace_back("x-headers-first", "1");
      auto r = unary(cq, "err", md, timeout());
      cq.Shutdown();
      const std::string code = codeName(r.status.error_code());
      bool ok = res.check(code == status, name + ": code " + code + ", not " + status);
      ok &= res.check(r.status.error_message() == message,
                      name + ": message '" + r.status.error_message() + "' differs");
      ok &= checkEcho(name, r.initial, r.trailing, first);
      Json keys = Json::array();
      for (const auto& [k, v] : r.initial) keys.push(k);
      if (first) {
        ok &= res.check(!get(r.initial, "x-pod").empty(), name + ": no x-pod in the headers");
      } else {
        // The server sent no headers at all: nothing may appear as initial metadata.
        ok &= res.check(!r.initial.count("x-pod") && !r.initial.count("x-echo-color"),
                        name + ": initial metadata in a trailers-only answer");
      }
      Json c = Json::object();
      c["ok"] = ok;
      c["pod"] = get(r.trailing, "x-pod");
      c["code"] = code;
      c["details"] = r.status.error_message();
      c["initial_keys"] = keys;
      cases[name] = c;
      res.countPod(get(r.trailing, "x-pod"));
    }
    res["cases"] = cases;
  }

  void countStreamPods(Result& res) {
    for (const auto& p : pods_seen_) res.countPod(p);
  }

 private:
  Options o_;
  double t_end_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::GenericStub> stub_;
  long ids_ = 0;
  std::vector<std::string> pods_seen_;
};

int usage(const char* why) {
  std::fprintf(stderr,
               "e2e_client: %s\nusage: e2e_client TARGET {unary|streams|cancel|deadline|metadata|"
               "during-kill} [--count N] [--concurrency C] [--sleep-ms S] [--seconds T] "
               "[--deadline-ms D] [--timeout S] [--max-seconds S] [--run ID] [--app-defaults]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--", 0) != 0) {
      pos.push_back(a);
      continue;
    }
    if (a == "--app-defaults") {
      o.appDefaults = true;
      continue;
    }
    if (i + 1 >= argc) return usage(("missing value for " + a).c_str());
    const std::string v = argv[++i];
    try {
      if (a == "--count") o.count = std::stol(v);
      else if (a == "--concurrency") o.concurrency = std::stoi(v);
      else if (a == "--sleep-ms") o.sleepMs = std::stoi(v);
      else if (a == "--seconds") o.seconds = std::stod(v);
      else if (a == "--deadline-ms") o.deadlineMs = std::stoi(v);
      else if (a == "--timeout") o.timeout = std::stod(v);
      else if (a == "--max-seconds") o.maxSeconds = std::stod(v);
      else if (a == "--run") o.run = v;
      else return usage(("unknown option " + a).c_str());
    } catch (const std::exception&) {
      return usage(("bad value for " + a + ": " + v).c_str());
    }
  }
  if (pos.size() != 2) return usage("need TARGET and SCENARIO");
  o.target = pos[0];
  o.scenario = pos[1];

  const std::map<std::string, std::function<void(Driver&, Result&)>> scenarios = {
      {"unary", [](Driver& d, Result& r) { d.unaryScenario(r); }},
      {"streams",
       [](Driver& d, Result& r) {
         d.streams(r);
         d.countStreamPods(r);
       }},
      {"cancel", [](Driver& d, Result& r) { d.cancel(r); }},
      {"deadline", [](Driver& d, Result& r) { d.deadline(r); }},
      {"metadata", [](Driver& d, Result& r) { d.metadata(r); }},
      {"during-kill", [](Driver& d, Result& r) { d.duringKill(r); }},
  };
  auto it = scenarios.find(o.scenario);
  if (it == scenarios.end()) return usage(("unknown scenario " + o.scenario).c_str());

  Result res(o);
  const double t0 = monoNow();
  {
    Driver driver(o);
    it->second(driver, res);
  }
  std::printf("%s\n", res.finish(monoNow() - t0).c_str());
  std::fflush(stdout);
  return 0;
}
