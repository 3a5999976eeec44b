#!/usr/bin/env bash
# Takes a StackGraph backup now from its CronJob (backup-now.sh stackgraph).
#
# Usage: scripts/restore/backup-stackgraph-now.sh [--background] [-n NAMESPACE]
#          [--context CONTEXT] [--keep]

set -o errexit
set -o nounset
set -o pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/lib.sh"
# shellcheck source=store.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/store.sh"

usage() { store::backup_now_usage ""; }

main() {
  store::select stackgraph StackGraph
  STORE_LIST_HINT="${SCRIPT_DIR}/list-stackgraph-backups.sh"
  store::backup_now "$@"
}

main "$@"
