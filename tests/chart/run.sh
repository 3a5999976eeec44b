#!/usr/bin/env bash
# Chart tests: helm lint --strict of every example, render assertions, every `fail` path,
# kubernetes-validate --strict for Kubernetes 1.28-1.34, and the rclone engine run as rendered
# in all three modes (local path, S3 gateway to a second rclone, Azure gateway to Azurite).
# Ends with "chart: N passed, M failed"; exits non-zero on any failure.
#
# Usage: tests/chart/run.sh        (after tests/install-tools.sh)
set -o errexit -o nounset -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

require() {
  local tool
  for tool in "$@"; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
      printf 'chart tests: %s not found; run tests/install-tools.sh\n' "${tool}" >&2
      exit 1
    fi
  done
}

main() {
  # shellcheck source=/dev/null  # tests/env.sh, checked on its own
  source "${HERE}/../env.sh"
  require helm kubernetes-validate rclone azurite-blob curl
  "${STS_ROOT}/.tools/venv/bin/python" "${HERE}/test_chart.py" "$@"
}

main "$@"
