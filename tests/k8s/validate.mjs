// Validates Kubernetes manifests offline against the API schemas, unknown fields included.
//
//   node validate.mjs FILE...      (multi-document YAML; "-" reads stdin)
//
// Two checks per object, both generated from the real OpenAPI schemas (kubernetes-models for
// the Kubernetes API, @kubernetes-models/prometheus-operator for monitoring.coreos.com):
//  1. the models' JSON-schema validators (ajv): required fields, types, enums, int32/formats;
//  2. TypeScript's excess-property check against the models' interfaces: a field the API does
//     not have is an error, as `kubectl apply --validate=strict` makes it. The validators of
//     (1) alone accept unknown fields.
// Prints one line per problem and exits 1, or prints "ok: N objects" and exits 0.
import { readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import YAML from "yaml";

const HERE = path.dirname(fileURLToPath(import.meta.url));

function modulePath(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string" || !/^[A-Z]\w*$/.test(kind)) {
    return null;
  }
  if (apiVersion.startsWith("monitoring.coreos.com/")) {
    return `@kubernetes-models/prometheus-operator/${apiVersion}/${kind}`;
  }
  return `kubernetes-models/${apiVersion}/${kind}`;
}

function readDocs(file) {
  const text = readFileSync(file === "-" ? 0 : file, "utf8");
  const out = [];
  for (const doc of YAML.parseAllDocuments(text, { uniqueKeys: true })) {
    if (doc.errors.length) {
      out.push({ file, error: doc.errors.map((e) => e.message).join("; ") });
      continue;
    }
    const obj = doc.toJS();
    if (obj !== null && obj !== undefined) out.push({ file, obj });
  }
  return out;
}

function label(d) {
  const o = d.obj ?? {};
  return `${d.file}: ${o.kind ?? "?"}/${o.metadata?.name ?? "?"}`;
}

async function main(files) {
  if (!files.length) {
    console.error("usage: node validate.mjs FILE...");
    return 2;
  }
  const problems = [];
  const docs = files.flatMap(readDocs);
  const typed = [];  // docs whose model was found, for the TypeScript check
  for (const d of docs) {
    if (d.error) {
      problems.push(`${d.file}: YAML: ${d.error}`);
      continue;
    }
    const mod = modulePath(d.obj.apiVersion, d.obj.kind);
    let Model;
    try {
      Model = mod && (await import(mod))[d.obj.kind];
    } catch {
      Model = null;
    }
    if (!Model) {
      problems.push(`${label(d)}: no schema for apiVersion ${d.obj.apiVersion} kind ${d.obj.kind}`);
      continue;
    }
    try {
      new Model(d.obj).validate();
    } catch (e) {
      problems.push(`${label(d)}: ${e.message}`);
    }
    typed.push({ ...d, mod });
  }

  // One virtual module: each object as a typed constant, pretty-printed so that a diagnostic's
  // line shows the offending field. It sits in this directory so node_modules resolves.
  const source = path.join(HERE, "__manifests__.mts");
  const lines = [];
  const owner = [];  // line number -> index in typed
  typed.forEach((d, i) => {
    lines.push(`import type { I${d.obj.kind} as T${i} } from ${JSON.stringify(d.mod)};`);
    owner.push(i);
  });
  typed.forEach((d, i) => {
    const body = `export const o${i}: T${i} = ${JSON.stringify(d.obj, null, 2)};`.split("\n");
    for (const line of body) {
      lines.push(line);
      owner.push(i);
    }
  });
  const text = lines.join("\n") + "\n";
  const options = {
    noEmit: true, strict: true, skipLibCheck: true, types: [],
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext, moduleResolution: ts.ModuleResolutionKind.NodeNext,
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, lang, ...rest) =>
    name === source ? ts.createSourceFile(name, text, lang, true) : getSourceFile(name, lang, ...rest);
  host.fileExists = (name) => name === source || fileExists(name);
  host.readFile = (name) => (name === source ? text : readFile(name));
  const program = ts.createProgram([source], options, host);
  for (const diag of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diag.messageText, " ");
    if (diag.file?.fileName !== source) {
      problems.push(`TypeScript: ${message}`);
      continue;
    }
    const { line } = diag.file.getLineAndCharacterOfPosition(diag.start);
    problems.push(`${label(typed[owner[line]])}: ${message} (at: ${lines[line].trim()})`);
  }

  for (const p of problems) console.log(p);
  if (problems.length) return 1;
  console.log(`ok: ${docs.length} objects`);
  return 0;
}

process.exitCode = await main(process.argv.slice(2));
