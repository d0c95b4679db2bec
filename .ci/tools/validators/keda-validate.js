// Validates KEDA resources (JSON documents on stdin, one array) against KEDA's CRD schemas,
// as @kubernetes-models/keda compiles them. Prints one line per document; exits 1 on any failure.
"use strict";
const kinds = {
  ScaledObject: require("@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject").ScaledObject,
  ScaledJob: require("@kubernetes-models/keda/keda.sh/v1alpha1/ScaledJob").ScaledJob,
  TriggerAuthentication: require("@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication").TriggerAuthentication,
};
const docs = JSON.parse(require("fs").readFileSync(0, "utf8"));
let failed = 0;
for (const doc of docs) {
  const name = `${doc.kind}/${(doc.metadata || {}).name}`;
  const Kind = kinds[doc.kind];
  if (!Kind) { console.log(`FAIL ${name}: not a KEDA kind this checks`); failed++; continue; }
  try { new Kind(doc).validate(); console.log(`ok ${name}`); }
  catch (err) { console.log(`FAIL ${name}: ${err.message}`); failed++; }
}
process.exit(failed ? 1 : 0);
