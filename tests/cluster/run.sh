#!/usr/bin/env bash
# The cluster suite: the Kubernetes API double (tests/cluster/*.py) driven by the real kubectl and
# helm over TLS — discovery, validation against the official schemas (1.28 and 1.34), conflicts,
# selectors, owner references, watches, RBAC for ServiceAccount tokens, the chart installed,
# upgraded and uninstalled; then the controllers and, where podman is present, the kubelet; the
# Elasticsearch scripts against the testkit's fake-es (built here in debug).
# Ends with unittest's summary; exits non-zero on any failure.
#
# Usage: tests/cluster/run.sh [unittest names...]     (after tests/install-tools.sh)
set -o errexit -o nounset -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

require() {
  local tool
  for tool in "$@"; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
      printf 'cluster tests: %s not found; run tests/install-tools.sh\n' "${tool}" >&2
      exit 1
    fi
  done
}

main() {
  # shellcheck source=/dev/null  # tests/env.sh, checked on its own
  source "${HERE}/../env.sh"
  require kubectl helm openssl cargo
  # the fake Elasticsearch of test_elasticsearch.py (jobs/testkit/src/fake_es)
  (cd "${STS_ROOT}" && cargo build --locked --quiet -p sts-backup-testkit --bin fake-es)
  cd "${HERE}"
  local tests=("$@")
  if ((${#tests[@]} > 0)); then
    "${STS_ROOT}/.tools/venv/bin/python" -m unittest -v "${tests[@]}"
  else
    "${STS_ROOT}/.tools/venv/bin/python" -m unittest discover -v -s "${HERE}" -p 'test_*.py'
  fi
}

main "$@"
