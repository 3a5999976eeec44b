#!/usr/bin/env bash
# Streaming benchmark and flat-memory check for `stackgraph-backup backup`.
#
# Streams N MiB of incompressible data from an exporter's stdout into a real S3 server
# (`rclone serve s3` on 127.0.0.1), once with stackgraph-backup and once with `rclone rcat`
# (a well-known streaming uploader) against the same server, on the same machine, in one run.
# Prints wall time, throughput and peak RSS for both, and the ratio. Then asserts that
# stackgraph-backup's memory is bounded by its part buffers, not by the backup size: every
# run's peak RSS must stay under part size x (concurrency + 1) = 5 x 16 MiB plus 70 MiB for
# the runtime, TLS, SDK and the `cat` exporter, i.e. 150 MiB, with backups of up to 512 MiB.
#
# Usage: tests/bench/run.sh [SIZE_MIB]      (default 512; BENCH_SIZES="128 512" for the memory check)
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")"/../.. && pwd -P)"
# shellcheck source=tests/env.sh disable=SC1091  # sourced at run time, linted on its own
source "${ROOT}/tests/env.sh"
readonly KEY=benchaccesskey SECRET=benchsecretkey0123456789
BIN="${ROOT}/target/x86_64-unknown-linux-gnu/release/stackgraph-backup"   # the static release build
WORK=""
SERVER_PID=""

cleanup() {
  if [[ -n ${SERVER_PID} ]]; then kill "${SERVER_PID}" 2>/dev/null; wait "${SERVER_PID}" 2>/dev/null || true; fi
  [[ -n ${WORK} ]] && rm -rf "${WORK:?}"
  return 0
}

start_server() {
  PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  mkdir -p "${WORK}/s3/bench"
  rclone serve s3 --addr "127.0.0.1:${PORT}" --auth-key "${KEY},${SECRET}" --config /dev/null \
    --dir-cache-time 0s "${WORK}/s3" >/dev/null 2>&1 &
  SERVER_PID=$!
  local _
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null && return
    sleep 0.1
  done
  echo "rclone serve s3 did not start" >&2
  return 1
}

# measure LABEL CMD...: runs CMD under GNU time; prints "seconds max_rss_kib".
measure() {
  local out="${WORK}/time.$1"
  shift
  /usr/bin/time -f '%e %M' -o "${out}" "$@" >/dev/null 2>"${WORK}/stderr.log" || {
    cat "${WORK}/stderr.log" >&2
    return 1
  }
  cat "${out}"
}

bench_once() {
  local mib=$1 data="${WORK}/data.bin"
  head -c "$((mib * 1024 * 1024))" /dev/urandom > "${data}"
  export AWS_EC2_METADATA_DISABLED=true
  local ours theirs
  ours="$(measure ours env BACKUP_STORAGE=s3://bench S3_ENDPOINT="http://127.0.0.1:${PORT}" \
    AWS_ACCESS_KEY_ID="${KEY}" AWS_SECRET_ACCESS_KEY="${SECRET}" \
    "${BIN}" backup --name-template "ours-${mib}-%H%M%S.bin" -- cat "${data}")"
  # shellcheck disable=SC2016  # $1/$2 expand in the inner sh, on purpose
  theirs="$(measure rclone env RCLONE_S3_PROVIDER=Other RCLONE_S3_ENDPOINT="http://127.0.0.1:${PORT}" \
    RCLONE_S3_ACCESS_KEY_ID="${KEY}" RCLONE_S3_SECRET_ACCESS_KEY="${SECRET}" \
    sh -c 'cat "$1" | rclone rcat --config /dev/null ":s3:bench/rclone-$2.bin"' sh "${data}" "${mib}")"
  rm -f "${data}" "${WORK}"/s3/bench/*
  read -r ours_s ours_kib <<<"${ours}"
  read -r theirs_s theirs_kib <<<"${theirs}"
  python3 - "${mib}" "${ours_s}" "${ours_kib}" "${theirs_s}" "${theirs_kib}" <<'PY'
import sys
mib, os_, ok, ts, tk = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"{mib} MiB  stackgraph-backup: {os_:6.2f} s {mib/os_:7.1f} MiB/s  peak RSS {ok/1024:6.1f} MiB")
print(f"{mib} MiB  rclone rcat:       {ts:6.2f} s {mib/ts:7.1f} MiB/s  peak RSS {tk/1024:6.1f} MiB (includes cat and sh)")
print(f"{mib} MiB  time ratio stackgraph-backup / rclone rcat = {os_/ts:.2f}")
PY
  LAST_RSS_KIB=${ours_kib}
}

main() {
  WORK="$(mktemp -d)"
  trap cleanup EXIT
  "${ROOT}/images/build-static.sh" >/dev/null   # shared with the images suite: no second build
  start_server
  local sizes=()
  read -r -a sizes <<<"${BENCH_SIZES:-128 512}"
  [[ $# -gt 0 ]] && sizes=("$1")
  local rss=()
  for mib in "${sizes[@]}"; do
    bench_once "${mib}"
    rss+=("${LAST_RSS_KIB}")
  done
  local limit_kib=$((150 * 1024)) worst=0 kib
  for kib in "${rss[@]}"; do
    ((kib > worst)) && worst=${kib}
  done
  echo "peak RSS over ${sizes[*]} MiB: $((rss[0] / 1024)) .. $((worst / 1024)) MiB (bound: $((limit_kib / 1024)) MiB)"
  if ((worst > limit_kib)); then
    echo "bench: 0 passed, 1 failed (memory exceeds the part-buffer bound)"
    return 1
  fi
  echo "bench: 1 passed, 0 failed"
}

main "$@"
