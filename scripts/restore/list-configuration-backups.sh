#!/usr/bin/env bash
# Lists the configuration backups (StackState 5.1 script name; list-backups.sh
# configuration).
#
# Usage: scripts/restore/list-configuration-backups.sh [-o table|json] [-n NAMESPACE]
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
  store::select configuration configuration
  store::list "$@"
}

main "$@"
