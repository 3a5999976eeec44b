#!/usr/bin/env bash
# Monitoring tests: `promtool check rules` and `promtool test rules` for every alert in
# chart/files/backup-alerts.yaml, with negative controls (a mutated rule must fail its unit
# test); the chart's monitor objects: ServiceMonitor and PrometheusRule valid against the
# prometheus-operator CRD schemas, the PrometheusRule's embedded rules accepted by promtool,
# the core objects by kubernetes-validate (strict), the rendered config accepted by
# `backup-monitor validate`. The monitor's own tests (real S3, real Prometheus) run in
# `cargo test`.
# Ends with "monitor: N passed, M failed"; exits non-zero on any failure.
#
# Usage: tests/monitor/run.sh        (after tests/install-tools.sh)
set -o errexit -o nounset -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
ROOT="$(cd "${HERE}/../.." && pwd -P)"
RULES="${ROOT}/chart/files/backup-alerts.yaml"

passed=0
failed=0

check() {
  local what=$1
  shift
  if "$@" >"${TMP}/out" 2>&1; then
    passed=$((passed + 1))
    printf 'ok      %s\n' "${what}"
  else
    failed=$((failed + 1))
    printf 'FAILED  %s\n' "${what}"
    sed 's/^/        /' "${TMP}/out"
  fi
}

# A rule file with one alert's expression changed must make `promtool test rules` fail.
mutant_fails() {
  local from=$1 to=$2 dir
  dir="$(mktemp -d "${TMP}/mutant.XXXX")"
  mkdir -p "${dir}/chart/files" "${dir}/tests/monitor"
  sed "s/${from}/${to}/" "${RULES}" >"${dir}/chart/files/backup-alerts.yaml"
  if cmp -s "${RULES}" "${dir}/chart/files/backup-alerts.yaml"; then
    echo "the mutation ${from} -> ${to} changed nothing" >&2
    return 1
  fi
  cp "${HERE}/alerts.test.yaml" "${dir}/tests/monitor/"
  ! promtool test rules "${dir}/tests/monitor/alerts.test.yaml"
}

# Renders the chart with the monitor and all its options on; prints the objects as JSON.
render_json() {
  helm template t "${ROOT}/chart" --set backup.enabled=true --set backup.stackGraph.image.tag=1 \
    --set backup.monitor.serviceMonitor.enabled=true --set backup.monitor.prometheusRule.enabled=true \
    --set backup.monitor.dashboard.enabled=true |
    python3 -c 'import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))'
}

crds_valid() {
  render_json >"${TMP}/objects.json"
  node "${HERE}/validate_crds.mjs" "${ROOT}/.tools/npm" <"${TMP}/objects.json"
}

# A ServiceMonitor with an interval the CRD forbids must be refused by the same check.
crds_catch_a_bad_interval() {
  render_json | sed 's/"interval": "60s"/"interval": "one minute"/' >"${TMP}/bad.json"
  ! node "${HERE}/validate_crds.mjs" "${ROOT}/.tools/npm" <"${TMP}/bad.json"
}

rendered_rules_pass_promtool() {
  render_json | python3 -c '
import json, sys, yaml
rule = [d for d in json.load(sys.stdin) if d["kind"] == "PrometheusRule"][0]
print(yaml.safe_dump(rule["spec"]))' >"${TMP}/rendered-rules.yaml"
  promtool check rules "${TMP}/rendered-rules.yaml" &&
    sed "s#../../chart/files/backup-alerts.yaml#${TMP}/rendered-rules.yaml#" "${HERE}/alerts.test.yaml" >"${TMP}/rendered.test.yaml" &&
    promtool test rules "${TMP}/rendered.test.yaml"
}

core_objects_valid() {
  local version
  helm template t "${ROOT}/chart" --set backup.enabled=true --set backup.stackGraph.image.tag=1 \
    --show-only templates/monitor-deployment.yaml --show-only templates/monitor-service.yaml \
    --show-only templates/monitor-configmap.yaml >"${TMP}/core.yaml"
  for version in 1.28.0 1.34.0; do
    kubernetes-validate --strict --kubernetes-version "${version}" "${TMP}/core.yaml" || return 1
  done
}

config_accepted() {
  render_json | python3 -c '
import json, sys
cm = [d for d in json.load(sys.stdin) if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-monitor")][0]
print(cm["data"]["config.json"])' >"${TMP}/config.json"
  "${MONITOR}" validate --config "${TMP}/config.json"
}

main() {
  command -v promtool >/dev/null || { echo "promtool not found; run tests/install-tools.sh" >&2; exit 1; }
  # shellcheck source=/dev/null  # tests/env.sh, checked on its own
  source "${ROOT}/tests/env.sh"
  cargo build -q -p backup-monitor
  MONITOR="${ROOT}/target/debug/backup-monitor"
  TMP="$(mktemp -d)"
  trap 'rm -rf "${TMP}"' EXIT

  check "promtool check rules" promtool check rules "${RULES}"
  check "promtool test rules (every alert fires and stays silent as specified)" \
    promtool test rules "${HERE}/alerts.test.yaml"
  check "negative control: BackupOverdue without its 'for' is caught" mutant_fails 'for: 10m' 'for: 0m'
  check "negative control: BackupMissing counting only committed is caught" \
    mutant_fails 'state=~"committed|legacy"' 'state="committed"'
  check "negative control: BackupCorrupt on the wrong value is caught" mutant_fails 'sts_backup_verify_success == 0' 'sts_backup_verify_success == 1'
  check "negative control: BackupMonitorDown with a longer staleness is caught" mutant_fails '> 900' '> 9000'
  check "chart: ServiceMonitor and PrometheusRule valid against the prometheus-operator CRDs" crds_valid
  check "negative control: a ServiceMonitor interval the CRD forbids is caught" crds_catch_a_bad_interval
  check "chart: the rendered PrometheusRule's rules pass promtool check and test" rendered_rules_pass_promtool
  check "chart: monitor Deployment, Service, ConfigMap valid for Kubernetes 1.28 and 1.34 (strict)" core_objects_valid
  check "chart: the rendered monitor config is accepted by backup-monitor validate" config_accepted

  echo "monitor: ${passed} passed, ${failed} failed"
  ((failed == 0))
}

main "$@"
