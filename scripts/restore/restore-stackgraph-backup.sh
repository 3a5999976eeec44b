#!/usr/bin/env bash
# Restores a StackGraph backup through a one-shot Job made from the chart's
# job-stackgraph-restore.json template, and follows it (restore-backup.sh
# stackgraph). The Job does the rest on its own (--orchestrate): it locks the
# store, checks before touching anything, scales the writers down and back to
# their recorded counts on every path, and records Events. If the terminal goes
# away the restore still finishes.
#
# Usage: scripts/restore/restore-stackgraph-backup.sh NAME|--latest [-force]
#          [--background] [-n NAMESPACE] [--context CONTEXT] [--keep]
#        scripts/restore/restore-stackgraph-backup.sh --finalize [-n NAMESPACE] ...

set -o errexit
set -o nounset
set -o pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/lib.sh"
# shellcheck source=store.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/store.sh"

usage() { store::restore_usage ""; }

main() {
  store::select stackgraph StackGraph
  STORE_LIST_HINT="${SCRIPT_DIR}/list-stackgraph-backups.sh"
  STORE_FORCE_HINT="To delete its data and restore"
  store::restore "$@"
}

main "$@"
