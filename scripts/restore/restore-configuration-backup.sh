#!/usr/bin/env bash
# Restores a configuration backup with `sts settings apply` (StackState 5.1
# script name; restore-backup.sh configuration). Unlike the 5.1 script, which
# uninstalled every StackPack whatever flag was given, a configuration that is
# not empty (a StackPack installed) is refused without -force.
#
# Usage: scripts/restore/restore-configuration-backup.sh NAME|--latest [-force]
#          [--background] [-n NAMESPACE] [--context CONTEXT] [--keep]

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
  store::select configuration configuration
  STORE_LIST_HINT="${SCRIPT_DIR}/list-configuration-backups.sh"
  STORE_FORCE_HINT="To apply over it"
  store::restore "$@"
}

main "$@"
