// Validates rendered prometheus-operator objects (ServiceMonitor, PrometheusRule) against the
// CRD schemas of prometheus-operator, as compiled into @kubernetes-models/prometheus-operator
// (tests/install-tools.sh pins the version). Reads a JSON array of objects on stdin; prints one
// line per object; exits 1 if any is invalid or if none was checked.
// Usage: node validate_crds.mjs NPM_PREFIX < objects.json
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const prefix = process.argv[2];
const model = (kind) =>
  import(pathToFileURL(path.join(prefix, "node_modules/@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1", `${kind}.js`)).href)
    .then((m) => m[kind]);

const docs = JSON.parse(fs.readFileSync(0, "utf8"));
let checked = 0;
let invalid = 0;
for (const doc of docs) {
  if (doc.apiVersion !== "monitoring.coreos.com/v1") continue;
  const Kind = await model(doc.kind);
  checked++;
  try {
    new Kind(doc).validate();
    console.log(`valid   ${doc.kind}/${doc.metadata.name}`);
  } catch (e) {
    invalid++;
    console.log(`INVALID ${doc.kind}/${doc.metadata.name}: ${e.message}`);
  }
}
if (checked === 0) console.log("no prometheus-operator object to check");
process.exit(invalid > 0 || checked === 0 ? 1 : 0);
