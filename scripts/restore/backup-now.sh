#!/usr/bin/env bash
# Takes a backup of any store now: creates a Job from the store's backup
# CronJob, follows its log and passes its exit code (KKP's "immediate backup",
# SUSE's *-now.sh).
#
# Usage: scripts/restore/backup-now.sh STORE [--background] [-n NAMESPACE]
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

usage() { store::backup_now_usage "${STORE:-STORE} "; }

main() {
  store::take_store "$@"
  store::backup_now "${REST[@]}"
}

main "$@"
