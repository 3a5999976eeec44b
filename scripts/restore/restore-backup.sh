#!/usr/bin/env bash
# Restores a backup of any store (stackgraph, configuration, a backup.stores
# key) through a one-shot Job made from the chart's job-STORE-restore.json
# template, and follows it. The Job locks the store, checks the backup and that
# the target is empty (or -force), scales the writers down and back, and
# records Events (--orchestrate); this script only launches and follows it.
#
# Usage: scripts/restore/restore-backup.sh STORE NAME|--latest [-force]
#          [--background] [-n NAMESPACE] [--context CONTEXT] [--keep]
#        scripts/restore/restore-backup.sh STORE --finalize [-n NAMESPACE] ...

set -o errexit
set -o nounset
set -o pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/lib.sh"
# shellcheck source=store.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/store.sh"

usage() { store::restore_usage "${STORE:-STORE} "; }

main() {
  store::take_store "$@"
  store::restore "${REST[@]}"
}

main "$@"
