#!/usr/bin/env bash
# Chart tests: helm lint --strict of every example, render assertions, every `fail` path,
# kubernetes-validate --strict for Kubernetes 1.28-1.34, the install/upgrade engine choice with the
# real helm against a stub API endpoint, and the rclone engine, the helm test pod, the multipart
# cleanup and the README's engine switch run as rendered in all three modes (local path, S3 gateway
# to a second rclone, Azure gateway to Azurite), with stackgraph-backup (built here) as the client.
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
  require cargo helm kubernetes-validate rclone azurite-blob curl
  # the name-template table and the engine switch run the binary
  (cd "${STS_ROOT}" && cargo build --quiet --locked -p stackgraph-backup)
  "${STS_ROOT}/.tools/venv/bin/python" "${HERE}/test_chart.py" "$@"
}

main "$@"
