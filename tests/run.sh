#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need (idempotent),
# then runs every suite even when an earlier one fails, and ends with one summary line.
#
# Usage: tests/run.sh [SUITE...]     (default: all suites; see SUITES below)
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")"/.. && pwd -P)"

# Each suite is a function below; they run in this order.
readonly SUITES=(rust-lint rust-tests scripts chart monitor cluster e2e images bench)

log() { printf '\n=== %s\n' "$*" >&2; }

suite_rust-lint() {
  cargo fmt --all --check
  cargo clippy --workspace --all-targets --locked -- -D warnings
  library_edge
}

# Libraries return typed errors and data; only the binaries and jobs/cli (their shared edge)
# use anyhow. (Print macros in libraries are refused by clippy, see each lib.rs.)
library_edge() {
  local found
  found="$(grep -rln 'anyhow' "${ROOT}"/jobs/{core,elasticsearch,cluster,testkit}/src "${ROOT}"/jobs/backup-monitor/src/lib.rs \
    "${ROOT}"/jobs/{core,elasticsearch,cluster}/Cargo.toml || true)"
  if [[ -n ${found} ]]; then
    printf 'anyhow outside the binary edge (jobs/cli, src/main.rs):\n%s\n' "${found}" >&2
    return 1
  fi
}

suite_rust-tests() {
  cargo test --workspace --locked
}

suite_scripts() { "${ROOT}/tests/scripts/run.sh"; }
suite_chart() { "${ROOT}/tests/chart/run.sh"; }
suite_cluster() { "${ROOT}/tests/cluster/run.sh"; }
suite_monitor() { "${ROOT}/tests/monitor/run.sh"; }
suite_e2e() { "${ROOT}/tests/e2e/run.sh"; }
suite_images() { "${ROOT}/tests/images/run.sh"; }
suite_bench() { "${ROOT}/tests/bench/run.sh"; }

main() {
  cd "${ROOT}"
  "${ROOT}/tests/install-tools.sh"
  # shellcheck source=tests/env.sh disable=SC1091  # sourced at run time, linted on its own
  source "${ROOT}/tests/env.sh"

  local suites=("$@")
  ((${#suites[@]} > 0)) || suites=("${SUITES[@]}")
  local passed=0 failed=0 failures=() suite started
  for suite in "${suites[@]}"; do
    declare -F "suite_${suite}" >/dev/null || { echo "unknown suite: ${suite} (known: ${SUITES[*]})" >&2; exit 2; }
    log "suite ${suite}"
    started=${SECONDS}
    if ("suite_${suite}"); then
      passed=$((passed + 1))
      log "suite ${suite}: passed in $((SECONDS - started))s"
    else
      failed=$((failed + 1))
      failures+=("${suite}")
      log "suite ${suite}: FAILED after $((SECONDS - started))s"
    fi
  done
  ((failed == 0)) || echo "failed suites: ${failures[*]}" >&2
  echo "suites: ${passed} passed, ${failed} failed"
  ((failed == 0))
}

main "$@"
