#!/usr/bin/env bash
# Lists the StackGraph backups in the backup storage, through a one-shot Job
# made from the chart's job-stackgraph-list.json template (list-backups.sh stackgraph).
#
# Usage: scripts/restore/list-stackgraph-backups.sh [-o table|json] [-n NAMESPACE]
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

usage() { store::list_usage ""; }

main() {
  store::select stackgraph StackGraph
  store::list "$@"
}

main "$@"
