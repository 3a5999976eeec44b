#!/usr/bin/env bash
# Builds the four job binaries as fully static x86-64 executables (static glibc via crt-static).
#
# The toolchain here has only the GNU target (no musl), so the binaries link glibc statically.
# glibc 2.36 carries the `files` and `dns` NSS modules built in, so a static binary still reads
# /etc/hosts and /etc/resolv.conf (cluster DNS) inside an empty root filesystem; TLS uses rustls
# (no libssl), with the roots from /etc/ssl/certs or `--ca-bundle`.
#
# The explicit `--target` matters: with it, RUSTFLAGS apply only to the target artifacts and
# proc-macros/build scripts (host artifacts) stay dynamic, so they still load.
#
# Output: target/x86_64-unknown-linux-gnu/release/{stackgraph-backup,retention-pruner,es-snapshot-register,backup-monitor}
# (or under $CARGO_TARGET_DIR). Also used by images/Dockerfile.
#
# Usage: images/build-static.sh [extra cargo args...]
set -o errexit -o nounset -o pipefail

readonly TARGET=x86_64-unknown-linux-gnu
readonly PACKAGES=(stackgraph-backup retention-pruner es-snapshot-register backup-monitor)

main() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")"/.. && pwd -P)"
  local pkg_args=()
  local pkg
  for pkg in "${PACKAGES[@]}"; do
    pkg_args+=(-p "${pkg}")
  done
  cd "${root}"
  # Keep a RUSTFLAGS that already asks for crt-static as it is (the Dockerfile sets it for
  # `cargo chef cook` too): a different RUSTFLAGS would make cargo rebuild every dependency.
  local rustflags="${RUSTFLAGS:-}"
  [[ ${rustflags} == *+crt-static* ]] || rustflags="${rustflags:+${rustflags} }-C target-feature=+crt-static"
  RUSTFLAGS="${rustflags}" cargo build --release --locked --target "${TARGET}" "${pkg_args[@]}" "$@"
  local out="${CARGO_TARGET_DIR:-${root}/target}/${TARGET}/release"
  for pkg in "${PACKAGES[@]}"; do
    [[ -x ${out}/${pkg} ]] || { printf 'build-static: %s missing in %s\n' "${pkg}" "${out}" >&2; return 1; }
  done
  printf '%s\n' "${out}"
}

main "$@"
