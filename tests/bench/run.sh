#!/usr/bin/env bash
# Backup and restore benchmark: stackgraph-backup against the well-known tools, in one run, on
# the same machine, the same data and the same server.
#
# For each size, N MiB of incompressible data is
#   - backed up, streamed from stdin:  ours (`backup -- cat FILE`), `s3cmd put - …`,
#     `aws s3 cp - …`, `rclone rcat …`;
#   - restored into a stdin reader:    ours (`restore NAME -- sh -c 'cat >/dev/null'`),
#     `s3cmd get … -`, `aws s3 cp s3://… -`, `rclone cat …`;
# against one `rclone serve s3` on 127.0.0.1 set up as the chart's default engine serves its
# volume (rclone's hasher over the directory, so the MD5 behind each ETag is computed once, as
# the object is written), every tool through the testkit's counting TCP proxy (so the bytes the
# server sent for our restore are known). Each command runs
# BENCH_RUNS times; the table shows the median wall time, the rate, the ratio to the fastest
# peer, the median CPU time (user + sys) and its ratio to the least CPU a peer used, and peak
# RSS (GNU time; a peer's includes its `cat`/`sh`). CPU time is the steadier measure on a
# shared machine: wall time grows with other load, CPU time much less. The server's own CPU
# is not counted in either. The load average is printed before and after.
#
# Checked (the cheap part CI keeps; speed ratios are reported, never asserted):
#   - our peak RSS, backup and restore, with default settings: <= BENCH_RSS_LIMIT_MIB (64);
#   - one read per restore: the bytes the server sent (counted by the proxy) for our restore
#     of N bytes <= N + one part (8 MiB, the default part size);
#   - resumable restore: through a proxy that cuts 3 connections mid-download, the restore
#     completes intact and the server still sent <= N + one part;
#   - one read on the server too: what the server process read (/proc/PID/io rchar: its files
#     and sockets) for our restore of N bytes <= N + one part, for our backup <= N + one part
#     (the upload itself; the read-backs of the commit must not re-read the object).
#
# BENCH_SERVER=plain serves the directory itself, as the issue's first measurement did: rclone
# then reads the whole object for every HEAD and before every GET (the server-read checks fail:
# their negative control).
#
# BENCH_RATE_MIB=R adds the restores through a proxy that throttles each connection to R MiB/s.
# BENCH_BIN=PATH benchmarks that stackgraph-backup binary instead of the static release build.
# BENCH_VARIANTS="NAME=VAR=VALUE,VAR=VALUE ..." adds rows "ours+NAME": ours again with those
#   settings (e.g. "c6=BACKUP_UPLOAD_CONCURRENCY=6 dl4=BACKUP_DOWNLOAD_CONCURRENCY=4"), to
#   compare settings in the same run; the checks apply to the default settings only.
# BENCH_PEERS="s3cmd aws-cli rclone" (the default) picks the peers; "" runs ours alone (the
#   4 GiB flatness run: aws-cli's ranged GETs each make rclone read the whole object).
#
# Usage: tests/bench/run.sh [SIZE_MIB]
#        BENCH_SIZES="512 4096" BENCH_RUNS=3 tests/bench/run.sh      (the README's table)
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")"/../.. && pwd -P)"
# shellcheck source=tests/env.sh disable=SC1091  # sourced at run time, linted on its own
source "${ROOT}/tests/env.sh"
readonly KEY=benchaccesskey SECRET=benchsecretkey0123456789
# The static release build, or BENCH_BIN (e.g. a release build that keeps its symbols for perf).
readonly STATIC_BIN="${CARGO_TARGET_DIR:-${ROOT}/target}/x86_64-unknown-linux-gnu/release/stackgraph-backup"
readonly BIN="${BENCH_BIN:-${STATIC_BIN}}"
readonly PROXY="${CARGO_TARGET_DIR:-${ROOT}/target}/release/tcp-proxy"
WORK=""
PIDS=()
readonly PART_BYTES=$((8 * 1024 * 1024))   # the default --part-size
CHECKS_PASSED=0
CHECKS_FAILED=0

usage() { sed -n '2,/^set -o/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

cleanup() {
  local pid
  # A later step failed: what was measured is still worth having.
  [[ -z ${TABLE_PRINTED:-} && -s ${WORK}/results ]] && print_table
  for pid in "${PIDS[@]}"; do kill "${pid}" 2>/dev/null || true; wait "${pid}" 2>/dev/null || true; done
  [[ -n ${WORK} ]] && rm -rf "${WORK:?}"
  return 0
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  local _
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

# Starts the testkit's proxy to the server (arguments after the upstream port: STATS [CUT_AFTER
# CUTS]) on a port it picks itself, and sets PROXY_PORT. A port chosen beforehand could be
# taken in between by one of the many connections the tools open.
start_proxy() {
  local out _
  out="$(mktemp -p "${WORK}" proxy.XXXX)"
  "${PROXY}" 0 "${S3_PORT}" "$@" >"${out}" &
  PIDS+=($!)
  for _ in $(seq 1 100); do
    read -r PROXY_PORT <"${out}" && [[ -n ${PROXY_PORT} ]] && return
    sleep 0.1
  done
  echo "tcp-proxy did not start" >&2
  return 1
}

start_servers() {
  S3_PORT="$(free_port)"
  mkdir -p "${WORK}/s3/bench"
  # 1ms, not 0s: with 0s rclone 1.75 spins on a directory after a delete (see the testkit's S3Server).
  local remote=":hasher,remote=${WORK}/s3:"
  [[ ${BENCH_SERVER:-chart} == plain ]] && remote="${WORK}/s3"
  rclone serve s3 --addr "127.0.0.1:${S3_PORT}" --auth-key "${KEY},${SECRET}" --config /dev/null \
    --cache-dir "${WORK}/rclone-cache" --dir-cache-time 1ms "${remote}" >/dev/null 2>&1 &
  SERVER_PID=$!
  PIDS+=($!)
  wait_port "${S3_PORT}"
  start_proxy "${WORK}/proxy.stats"
  PORT=${PROXY_PORT}
  ENDPOINT="http://127.0.0.1:${PORT}"
}

# Bytes the server process has read so far (files and sockets).
server_reads() { awk '$1 == "rchar:" { print $2 }' "/proc/${SERVER_PID}/io"; }

# Bytes the server has sent through the proxy so far.
served() {
  local down _
  read -r down _ <"${WORK}/proxy.stats"
  echo "${down}"
}

# measure CMD...: runs CMD under GNU time; prints "wall_s max_rss_kib user_s sys_s".
measure() {
  /usr/bin/time -f '%e %M %U %S' -o "${WORK}/time" "$@" >/dev/null 2>"${WORK}/stderr.log" || {
    echo "benchmark command failed: $*" >&2
    cat "${WORK}/stderr.log" >&2
    return 1
  }
  cat "${WORK}/time"
}

ours() {
  env BACKUP_STORAGE=s3://bench S3_ENDPOINT="${S3_ENDPOINT_OVERRIDE:-${ENDPOINT}}" AWS_ACCESS_KEY_ID="${KEY}" \
    AWS_SECRET_ACCESS_KEY="${SECRET}" AWS_EC2_METADATA_DISABLED=true "${BIN}" "$@"
}

s3cmd_() {
  s3cmd --access_key="${KEY}" --secret_key="${SECRET}" --host="127.0.0.1:${PORT}" \
    --host-bucket="127.0.0.1:${PORT}" --no-ssl --no-check-md5 --config=/dev/null "$@"
}

aws_() {
  env AWS_ACCESS_KEY_ID="${KEY}" AWS_SECRET_ACCESS_KEY="${SECRET}" AWS_DEFAULT_REGION=us-east-1 \
    AWS_EC2_METADATA_DISABLED=true aws --endpoint-url "${ENDPOINT}" "$@"
}

rclone_() {
  env RCLONE_S3_PROVIDER=Other RCLONE_S3_ENDPOINT="${ENDPOINT}" RCLONE_S3_ACCESS_KEY_ID="${KEY}" \
    RCLONE_S3_SECRET_ACCESS_KEY="${SECRET}" rclone --config /dev/null "$@"
}

median() { sort -n | sed -n "$((($1 + 1) / 2))p"; }

# One row: TOOL OP MIB RUNS CMD... -> appends "tool op mib median_wall_s rss_kib median_cpu_s"
# to results.
# Every backup run starts from the same server: an empty bucket and no dirty pages left by the
# run before. Without it our backups (a new object each run, where the peers overwrite theirs)
# and whatever ran late were timed under the kernel's writeback of the earlier runs' gigabytes.
settle_server() {
  rm -rf "${WORK:?}/s3/bench/"*
  sync
}

row() {
  local tool=$1 op=$2 mib=$3 runs=$4
  shift 4
  local i times=() cpus=() rss=0 t k user sys
  for ((i = 1; i <= runs; i++)); do
    [[ ${op} == backup ]] && settle_server
    read -r t k user sys <<<"$(measure "$@")"
    times+=("${t}")
    cpus+=("$(python3 -c 'import sys; print(f"{float(sys.argv[1]) + float(sys.argv[2]):.2f}")' "${user}" "${sys}")")
    ((k > rss)) && rss=${k}
  done
  printf '%s %s %s %s %s %s\n' "${tool}" "${op}" "${mib}" "$(printf '%s\n' "${times[@]}" | median "${runs}")" \
    "${rss}" "$(printf '%s\n' "${cpus[@]}" | median "${runs}")" >>"${WORK}/results"
}

export -f ours s3cmd_ aws_ rclone_

# The commands are single-quoted on purpose: they expand in the inner bash, at each run.
# shellcheck disable=SC2016
bench_size() {
  local mib=$1 runs=$2 data="${WORK}/data.bin" name
  head -c "$((mib * 1024 * 1024))" /dev/urandom >"${data}"
  export DATA="${data}" ENDPOINT PORT KEY SECRET BIN
  name="ours-${mib}.bin"
  # Backups: each run writes a new object (ours refuses to overwrite a name).
  row ours backup "${mib}" "${runs}" bash -c 'ours backup --name-template "ours-'"${mib}"'-%H%M%S-$RANDOM.bin" -- cat "$DATA"'
  peer s3cmd && row s3cmd backup "${mib}" "${runs}" bash -c 'cat "$DATA" | s3cmd_ put - "s3://bench/s3cmd-'"${mib}"'.bin"'
  peer aws-cli && row aws-cli backup "${mib}" "${runs}" bash -c 'cat "$DATA" | aws_ s3 cp - "s3://bench/aws-'"${mib}"'.bin"'
  peer rclone && row rclone backup "${mib}" "${runs}" bash -c 'cat "$DATA" | rclone_ rcat ":s3:bench/rclone-'"${mib}"'.bin"'
  local variant
  for variant in ${BENCH_VARIANTS:-}; do
    with_variant "${variant}" row "ours+${variant%%=*}" backup "${mib}" "${runs}" \
      bash -c 'ours backup --name-template "ours-'"${mib}"'-%H%M%S-$RANDOM.bin" -- cat "$DATA"'
  done
  local reads
  reads="$(server_reads)"
  ours backup --name-template "${name}" -- cat "${data}" >/dev/null 2>&1
  echo "${mib} backup $(($(server_reads) - reads))" >>"${WORK}/server-reads"
  # The peers read the same bytes, put behind the server directly (the backup runs above each
  # started from an empty bucket).
  local copy
  for copy in s3cmd aws rclone; do
    cp "${data}" "${WORK}/s3/bench/${copy}-${mib}.bin"
    # the server hashes what it did not see written once, here, not in the first timed run
    aws_ s3api head-object --bucket bench --key "${copy}-${mib}.bin" >/dev/null
  done
  sync

  # Restores into a reader of stdin; the bytes the server sent for them, per restore.
  local before after
  before="$(served)"
  reads="$(server_reads)"
  row ours restore "${mib}" "${runs}" bash -c 'ours restore '"${name}"' -- sh -c "exec cat >/dev/null"'
  sleep 0.3   # the proxy rewrites its stats every 100 ms
  after="$(served)"
  echo "${mib} restore $((($(server_reads) - reads) / runs))" >>"${WORK}/server-reads"
  ONE_READ_BYTES="$(((after - before) / runs))"
  peer_restores restore "${mib}" "${runs}" "${name}"
  resume_through_cuts "${mib}" "${name}" "${data}"
  [[ -n ${BENCH_RATE_MIB:-} ]] && throttled_restores "${mib}" "${runs}" "${name}"
  rm -f "${data}" "${WORK}"/s3/bench/*

  python3 -c 'import sys; n, mib = int(sys.argv[1]), int(sys.argv[2]); print(f"restore of {mib} MiB: the server sent {n} bytes ({n / (mib * 1048576):.2f} reads of the object)")' \
    "${ONE_READ_BYTES}" "${mib}"
  echo "${mib} ${ONE_READ_BYTES}" >>"${WORK}/served"
}

# Resumable restore: through a second proxy that cuts 3 connections, each after a quarter of
# the object, our restore still completes with the right bytes, and the server sent the object
# once plus at most one part (a restart from zero would send 1.25x or more).
resume_through_cuts() {
  local mib=$1 name=$2 data=$3 port stats="${WORK}/cut-${1}.stats" down cuts want got
  start_proxy "${stats}" "$((mib * 1024 * 1024 / 4))" 3
  port=${PROXY_PORT}
  want="$(sha256sum <"${data}" | cut -d' ' -f1)"
  S3_ENDPOINT_OVERRIDE="http://127.0.0.1:${port}" ours restore "${name}" -- sh -c "sha256sum > '${WORK}/cut.sum'" \
    2>"${WORK}/cut.log" || { cat "${WORK}/cut.log" >&2; }
  sleep 0.3   # the proxy rewrites its stats every 100 ms
  read -r down _ _ cuts <"${stats}"
  got="$(cut -d' ' -f1 "${WORK}/cut.sum" 2>/dev/null || true)"
  check "restore of ${mib} MiB through 3 cut connections completes intact (${cuts} cuts)" \
    test "${got}" = "${want}" -a "${cuts}" = 3
  check "... and the server sent ${down} bytes <= N + one part" \
    test "${down}" -le "$((mib * 1024 * 1024 + PART_BYTES))"
}

# The restores again through a proxy that throttles each connection to BENCH_RATE_MIB MiB/s
# (a link where one stream is slow: latency, a shaped WAN), where our parallel part reads
# show their worth. Reported as op "restore@R".
# shellcheck disable=SC2016
throttled_restores() {
  local mib=$1 runs=$2 name=$3 port op="restore@${BENCH_RATE_MIB}"
  TCP_PROXY_RATE="$((BENCH_RATE_MIB * 1024 * 1024))" start_proxy "${WORK}/slow.stats"
  port=${PROXY_PORT}
  local saved_port=${PORT} saved_endpoint=${ENDPOINT}
  export PORT=${port} ENDPOINT="http://127.0.0.1:${port}"
  row ours "${op}" "${mib}" "${runs}" bash -c 'ours restore '"${name}"' -- sh -c "exec cat >/dev/null"'
  peer_restores "${op}" "${mib}" "${runs}" "${name}"
  export PORT=${saved_port} ENDPOINT=${saved_endpoint}
}

# The variants' restores of our object, then the peers' restores of theirs, as op OP.
# shellcheck disable=SC2016
peer_restores() {
  local op=$1 mib=$2 runs=$3 name=$4 variant
  for variant in ${BENCH_VARIANTS:-}; do
    with_variant "${variant}" row "ours+${variant%%=*}" "${op}" "${mib}" "${runs}" \
      bash -c 'ours restore '"${name}"' -- sh -c "exec cat >/dev/null"'
  done
  peer s3cmd && row s3cmd "${op}" "${mib}" "${runs}" bash -c 's3cmd_ get "s3://bench/s3cmd-'"${mib}"'.bin" - >/dev/null'
  peer aws-cli && row aws-cli "${op}" "${mib}" "${runs}" bash -c 'aws_ s3 cp "s3://bench/aws-'"${mib}"'.bin" - >/dev/null'
  peer rclone && row rclone "${op}" "${mib}" "${runs}" bash -c 'rclone_ cat ":s3:bench/rclone-'"${mib}"'.bin" >/dev/null'
  return 0
}

# Whether peer TOOL is benchmarked (BENCH_PEERS).
peer() { [[ " ${BENCH_PEERS-s3cmd aws-cli rclone} " == *" $1 "* ]]; }

# with_variant NAME=VAR=VALUE,VAR=VALUE CMD...: runs CMD with those variables exported.
with_variant() {
  local settings=${1#*=} pair
  shift
  (
    IFS=, read -r -a pairs <<<"${settings}"
    for pair in "${pairs[@]}"; do export "${pair?}"; done
    "$@"
  )
}

# One read per restore: bytes served <= N + one part, for every size benchmarked.
check_one_read() {
  local mib served limit
  while read -r mib served; do
    limit=$((mib * 1024 * 1024 + PART_BYTES))
    check "our restore of ${mib} MiB read ${served} bytes from the server <= N + one part (${limit})" \
      test "${served}" -le "${limit}"
  done <"${WORK}/served"
  local op reads
  while read -r mib op reads; do
    limit=$((mib * 1024 * 1024 + PART_BYTES))
    check "the server read ${reads} bytes for our ${op} of ${mib} MiB <= N + one part (${limit})" \
      test "${reads}" -le "${limit}"
  done <"${WORK}/server-reads"
}

check() {
  local what=$1
  shift
  if "$@"; then
    CHECKS_PASSED=$((CHECKS_PASSED + 1))
    echo "ok      ${what}"
  else
    CHECKS_FAILED=$((CHECKS_FAILED + 1))
    echo "FAILED  ${what}"
  fi
}

print_table() {
  TABLE_PRINTED=1
  python3 - "${WORK}/results" <<'PY'
import collections, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
by = collections.defaultdict(dict)
for tool, op, mib, secs, rss, cpu in rows:
    by[(op, int(mib))][tool] = (float(secs), int(rss) / 1024, float(cpu))
print(f"{'op':10} {'MiB':>5} {'tool':8} {'wall s':>7} {'MiB/s':>7} {'wall vs best peer':>17} "
      f"{'CPU s':>6} {'CPU vs best peer':>16} {'peak RSS MiB':>12}")
for (op, mib), tools in sorted(by.items()):
    peers = [v for t, v in tools.items() if not t.startswith("ours")]
    fastest = min(p[0] for p in peers) if peers else None
    leanest = min(p[2] for p in peers) if peers else None
    for tool, (secs, rss, cpu) in sorted(tools.items(), key=lambda kv: kv[1][0]):
        ratio = f"{secs / fastest:.2f}x" if fastest else "-"
        cpu_ratio = f"{cpu / leanest:.2f}x" if leanest else "-"
        print(f"{op:10} {mib:5d} {tool:8} {secs:7.2f} {mib / max(secs, 1e-9):7.1f} {ratio:>17} "
              f"{cpu:6.2f} {cpu_ratio:>16} {rss:12.1f}")
PY
}

main() {
  [[ ${1:-} == -h || ${1:-} == --help ]] && { usage; return 0; }
  WORK="$(mktemp -d)"
  trap cleanup EXIT
  [[ ${BIN} != "${STATIC_BIN}" ]] || "${ROOT}/images/build-static.sh" >/dev/null   # shared with the images suite
  cargo build -q --release -p sts-backup-testkit --bin tcp-proxy
  start_servers
  local sizes=() runs=${BENCH_RUNS:-1}
  read -r -a sizes <<<"${BENCH_SIZES:-128}"
  [[ $# -gt 0 ]] && sizes=("$1")
  : >"${WORK}/results"
  : >"${WORK}/served"
  : >"${WORK}/server-reads"
  echo "bench: ${sizes[*]} MiB, ${runs} run(s) each, $(nproc) CPUs, load average at start $(cut -d' ' -f1-3 /proc/loadavg)"
  for mib in "${sizes[@]}"; do
    bench_size "${mib}" "${runs}"
  done
  echo "bench: load average at end $(cut -d' ' -f1-3 /proc/loadavg)"
  print_table
  local limit_kib=$((${BENCH_RSS_LIMIT_MIB:-64} * 1024)) op worst
  for op in backup restore; do
    worst="$(awk -v op="${op}" '$1 == "ours" && $2 == op { if ($5 > m) m = $5 } END { print m + 0 }' "${WORK}/results")"
    check "our ${op} peak RSS $((worst / 1024)) MiB <= $((limit_kib / 1024)) MiB over ${sizes[*]} MiB" \
      test "${worst}" -le "${limit_kib}"
  done
  check_one_read
  echo "bench: ${CHECKS_PASSED} passed, ${CHECKS_FAILED} failed"
  ((CHECKS_FAILED == 0))
}

main "$@"
