#!/usr/bin/env bash
# Alert tests: `promtool check rules` and `promtool test rules` for every alert in
# chart/files/backup-alerts.yaml, plus negative controls (a mutated rule must fail its unit
# test). The monitor's own tests (real S3, real Prometheus) run in `cargo test`.
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

main() {
  command -v promtool >/dev/null || { echo "promtool not found; run tests/install-tools.sh" >&2; exit 1; }
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

  echo "monitor: ${passed} passed, ${failed} failed"
  ((failed == 0))
}

main "$@"
