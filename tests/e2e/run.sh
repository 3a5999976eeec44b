#!/usr/bin/env bash
# Pod-runner end-to-end test: builds the job binaries, then runs tests/e2e/pod_runner.py, which
# runs the pods of the rendered chart as local processes against the storage service in all
# three rclone modes (local path, S3 gateway, Azure gateway over Azurite) with PostgreSQL and
# etcd as the graph server: backup -> list -> prune -> restore, and a refused restore.
# Ends with "e2e: N passed, M failed"; exits non-zero on any failure.
#
# Usage: tests/e2e/run.sh [MODE|STORE...]   e.g. tests/e2e/run.sh local postgres
#        E2E_KEEP=1 keeps the work dir (it is always kept after a failure).
set -o errexit -o nounset -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
PIDFILE=""
RUNNER_PID=""

require() {
  local tool
  for tool in "$@"; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
      printf 'e2e: %s not found; run tests/install-tools.sh\n' "${tool}" >&2
      exit 1
    fi
  done
}

# Stops the runner and every server it recorded in the pid file (by id; normally it has
# already stopped them itself).
cleanup() {
  local pid
  if [[ -n ${RUNNER_PID} ]] && kill -0 "${RUNNER_PID}" 2>/dev/null; then
    kill -TERM "${RUNNER_PID}" 2>/dev/null || true
    wait "${RUNNER_PID}" 2>/dev/null || true
  fi
  if [[ -n ${PIDFILE} && -f ${PIDFILE} ]]; then
    while read -r pid; do
      [[ ${pid} =~ ^[0-9]+$ ]] || continue
      kill -TERM "-${pid}" 2>/dev/null || kill -TERM "${pid}" 2>/dev/null || true
    done <"${PIDFILE}"
    rm -f "${PIDFILE}"
  fi
}

build() {
  printf 'e2e: cargo build -p stackgraph-backup -p retention-pruner -p es-snapshot-register\n'
  (cd "${STS_ROOT}" && cargo build --quiet --locked -p stackgraph-backup -p retention-pruner -p es-snapshot-register)
}

main() {
  # shellcheck source=/dev/null  # tests/env.sh, checked on its own
  source "${HERE}/../env.sh"
  require cargo helm rclone azurite-blob etcd etcdctl pg_dump pg_restore psql initdb bash
  build
  PIDFILE="$(mktemp "${TMPDIR:-/tmp}/sts-e2e-pids.XXXXXX")"
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  local rc=0
  E2E_PIDFILE="${PIDFILE}" "${STS_ROOT}/.tools/venv/bin/python" "${HERE}/pod_runner.py" "$@" &
  RUNNER_PID=$!
  wait "${RUNNER_PID}" || rc=$?
  RUNNER_PID=""
  return "${rc}"
}

main "$@"
