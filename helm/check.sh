#!/usr/bin/env bash
# Lints, renders and validates the chart: `helm lint --strict`, `helm template` with the
# default and a production-like values file, kubernetes-validate --strict on the output,
# a schema that rejects wrong types, no secret values in the rendered manifests, and the
# rendered config.toml loaded by the service itself. Needs `helm` (v4) and
# `kubernetes-validate` on PATH (or HELM=/path/to/helm); .ci/run fetches both.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM="${HELM:-helm}"
CHART=helm/loyalty
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

"$HELM" version --short
"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" -f "$CHART/ci/production-values.yaml"
"$HELM" template loyalty "$CHART" > "$OUT/default.yaml"
"$HELM" template loyalty "$CHART" -f "$CHART/ci/production-values.yaml" > "$OUT/production.yaml"

for f in default production; do
  kubernetes-validate --strict --quiet "$OUT/$f.yaml"
  # Secrets come only from an existing Secret: no Secret objects, no URLs with
  # credentials, no key material, no API keys.
  if grep -nE 'kind: Secret$|postgres(ql)?://|BEGIN [A-Z ]*PRIVATE KEY|lk_[A-Za-z0-9_-]{8,}|password' "$OUT/$f.yaml"; then
    echo "the rendered $f manifests contain a secret value" >&2
    exit 1
  fi
done
grep -q 'secretKeyRef' "$OUT/default.yaml"

# The schema rejects wrong types and a database URL in the values.
for bad in 'replicaCount=two' 'service.port=grpc' 'autoscaling.enabled=maybe' 'config.database.url=postgres://u:p@h/db'; do
  if "$HELM" template loyalty "$CHART" --set "$bad" > /dev/null 2>&1; then
    echo "values.schema.json accepted --set $bad" >&2
    exit 1
  fi
done

# The ConfigMap's config.toml is one the service accepts (unknown keys are errors).
python3 - "$OUT/production.yaml" "$OUT/config.toml" <<'PY'
import sys
docs = open(sys.argv[1]).read().split("\n---")
for d in docs:
    if "kind: ConfigMap" in d:
        body = d.split("config.toml: |", 1)[1]
        lines = [l[4:] if l.startswith("    ") else l for l in body.splitlines()]
        open(sys.argv[2], "w").write("\n".join(lines) + "\n")
        break
else:
    sys.exit("no ConfigMap rendered")
PY
LOYALTY__DATABASE__URL="sqlite://$OUT/check.db?mode=rwc" cargo run --quiet --bin loyalty -- --config "$OUT/config.toml" migrate
echo "chart OK"
