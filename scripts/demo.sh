#!/usr/bin/env bash
# Runs stackgraph-backup end to end on the embedded default storage (a local file://
# directory): backs up a small sample store with tar, lists and verifies the backup, shows
# that a restore into a non-empty target is refused, restores into an empty target and
# compares the result with the original.
#
# Usage: scripts/demo.sh        (needs cargo; builds the binary on first run)
set -o errexit -o nounset -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")"/.. && pwd -P)"
WORK="${ROOT}/target/demo"
BIN="${ROOT}/target/debug/stackgraph-backup"

step() { printf '\n\033[1m### %s\033[0m\n' "$*" >&2; }

build() {
  step "Building stackgraph-backup"
  cargo build --quiet --manifest-path "${ROOT}/Cargo.toml" -p stackgraph-backup
}

make_sample_store() {
  rm -rf "${WORK:?}"
  mkdir -p "${WORK}/store/topology" "${WORK}/restored"
  local i
  for i in $(seq 1 200); do
    printf 'component-%03d depends-on component-%03d\n' "${i}" "$(((i * 7) % 200 + 1))" > "${WORK}/store/topology/c${i}.edge"
  done
  printf 'demo StackGraph store, %s\n' "$(date -u +%FT%TZ)" > "${WORK}/store/README"
}

main() {
  build
  make_sample_store
  cd "${WORK}"
  export BACKUP_STORAGE="file://${WORK}/backups"

  step "Backing up the sample store (tar on stdout, zstd, streamed to ${BACKUP_STORAGE})"
  "${BIN}" backup --compress zstd --name-template 'sts-backup-%Y%m%d-%H%M%S.graph' -- tar -C store -cf - .

  step "Listing backups"
  "${BIN}" list
  local name
  name="$("${BIN}" list -o json | sed -n 's/.*"name":"\([^"]*\)".*/\1/p' | tail -n 1)"

  step "Verifying ${name} against its manifest"
  "${BIN}" verify "${name}"

  step "Restoring into a NON-empty target is refused (exit 3)"
  local rc=0
  "${BIN}" restore "${name}" --empty-check "test ! -e store/README" -- tar -C store -xf - || rc=$?
  [[ ${rc} -eq 3 ]] || { echo "expected exit 3, got ${rc}" >&2; exit 1; }
  echo "exit code ${rc}: refused, as it should be" >&2

  step "Restoring into an empty target"
  "${BIN}" restore "${name}" --empty-check "test ! -e restored/README" -- tar -C restored -xf -

  step "Comparing the restored store with the original"
  diff -r store restored
  echo "identical: $(find restored -type f | wc -l) files restored" >&2
  step "Done. Backups are in ${WORK}/backups"
  ls -l "${WORK}/backups" >&2
}

main "$@"
