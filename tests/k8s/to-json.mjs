// Prints multi-document YAML (a file, or "-" for stdin) as one JSON array, for the Python
// tests, which have no YAML parser of their own.
import { readFileSync } from "node:fs";
import YAML from "yaml";

const file = process.argv[2] ?? "-";
const docs = YAML.parseAllDocuments(readFileSync(file === "-" ? 0 : file, "utf8"));
process.stdout.write(JSON.stringify(docs.map((d) => d.toJS()).filter((o) => o != null)) + "\n");
