#!/usr/bin/env bash
# Lists the backups of any store (stackgraph, configuration, a backup.stores key)
# through a one-shot Job made from the chart's job-STORE-list.json template.
#
# Usage: scripts/restore/list-backups.sh STORE [-o table|json] [-n NAMESPACE]
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

usage() { store::list_usage "${STORE:-STORE} "; }

main() {
  store::take_store "$@"
  store::list "${REST[@]}"
}

main "$@"
