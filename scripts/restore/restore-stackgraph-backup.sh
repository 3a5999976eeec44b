#!/usr/bin/env bash
# Restores a StackGraph backup through a one-shot Job made from the chart's
# job-stackgraph-restore.json template, and follows it. The Job does the rest
# on its own (--orchestrate): it locks the store, checks before touching
# anything, scales the writers down and back to their recorded counts on every
# path, and records Events. This script only launches and follows it; if the
# terminal goes away the restore still finishes.
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

usage() {
  cat <<USAGE
Usage: ${0##*/} NAME [-force] [--background] [-n NAMESPACE] [--context CONTEXT] [--keep]
       ${0##*/} --latest [-force] [...]
       ${0##*/} --finalize [-n NAMESPACE] [--context CONTEXT] [--keep]

Restores the StackGraph backup NAME (see list-stackgraph-backups.sh) by running
a one-shot Job from the sts-backup chart's job templates (needs
backup.stackGraph.restore.enabled), and follows its log. The Job itself takes
the store's lock, checks the backup and that StackGraph is empty, scales the
writers (backup.stackGraph.restore.scaleDownSelector) to 0 and back to their
recorded replica counts, and records Events on itself. Interrupting this
script does not stop the restore: the Job finishes on its own.

      --latest             restore the newest committed backup (no NAME)
  -force, --force          delete the data in a non-empty StackGraph first
      --background         return once the Job runs; print how to follow it
      --finalize           scale back now what an interrupted restore left
                           scaled down (the next restore or backup also would)
  -n, --namespace NS       namespace of the sts-backup release (default: current)
      --context CONTEXT    kubeconfig context (default: current)
      --keep               keep the Job afterwards, for debugging
  -h, --help               this help

Exit codes (the Job's): 0 restored, 1 failure, 2 usage error or invalid NAME,
3 refused for safety, nothing changed (StackGraph is not empty: use -force;
or another restore or backup holds the store's lock), 4 integrity failure of
the backup, 130/143 interrupted (the Job keeps running).
USAGE
}

# Parses --latest and --finalize out of the arguments into REST.
parse_restore_flags() {
  LATEST=false FINALIZE=false REST=()
  while (($# > 0)); do
    case $1 in
      -latest | --latest) LATEST=true ;;
      --finalize) FINALIZE=true ;;
      --) REST+=("$@"); break ;;
      *) REST+=("$1") ;;
    esac
    shift
  done
}

finalize() {
  ((${#ARGS[@]} == 0)) || lib::usage_error "--finalize takes no NAME"
  [[ ${FORCE} == false && ${LATEST} == false && ${BACKGROUND} == false ]] \
    || lib::usage_error "--finalize takes none of -force, --latest, --background"
  lib::init
  lib::load_template job-stackgraph-finalize.json backup.stackGraph.orchestrate.enabled
  JOB_NAME=$(lib::job_name stackgraph-finalize)
  lib::create_job "$(lib::render_template "${TEMPLATE}" JOB_NAME="${JOB_NAME}")"
  lib::run_job finalize
  case ${JOB_RC} in
    0) lib::finish 0 "Nothing is left scaled down by a restore." ;;
    3) lib::finish 3 "Not finalized: a restore or backup holds the store's lock (see above); it scales back itself when it ends." ;;
    *) lib::finish "${JOB_RC}" "Finalize failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint finalize)" ;;
  esac
}

main() {
  parse_restore_flags "$@"
  lib::parse_args "force background" "${REST[@]}"
  ORIG_ARGS=("$@")
  [[ ${FINALIZE} == false ]] || finalize
  local name="" what manifest message log
  if [[ ${LATEST} == true ]]; then
    ((${#ARGS[@]} == 0)) || lib::usage_error "--latest takes no NAME"
    what="the newest StackGraph backup"
  else
    ((${#ARGS[@]} == 1)) || lib::usage_error "expected one backup NAME (or --latest), got ${#ARGS[@]} arguments"
    name=${ARGS[0]}
    what="StackGraph backup ${name}"
  fi
  lib::init
  lib::load_template job-stackgraph-restore.json backup.stackGraph.restore.enabled
  JOB_NAME=$(lib::job_name stackgraph-restore)
  manifest=$(lib::render_template "${TEMPLATE}" JOB_NAME="${JOB_NAME}" \
    BACKUP_NAME="${name}" LATEST="${LATEST}" FORCE="${FORCE}")
  if lib::orchestrated "${TEMPLATE}"; then
    DETACH_ON_INTERRUPT=true
  else
    lib::warn "The chart renders this restore without orchestration (backup.stackGraph.orchestrate.enabled=false): nothing locks the store or scales its writers down; stop them yourself first."
  fi
  TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sts-restore-XXXXXX")
  log="${TMP_DIR}/log"
  lib::create_job "${manifest}"
  lib::run_job restore "" "${log}"
  if [[ ${BACKGROUND} == true && ${JOB_RUNNING} == true ]]; then
    lib::finish 0 "Started the restore of ${what} in job ${JOB_NAME}."
  fi
  case ${JOB_RC} in
    0) message="Restored ${what}." ;;
    3)
      if grep -q ' is locked by ' "${log}" 2>/dev/null; then
        message="Not restored, nothing changed: another restore or backup holds the store's lock (see above). Wait for it, then rerun: $(lib::rerun_command)"
      else
        message="Not restored, nothing changed: StackGraph is not empty. To delete its data and restore ${what#StackGraph }, rerun: $(lib::rerun_command -force)"
      fi ;;
    4) message="Not restored: ${what} failed its integrity check (checksum mismatch or missing manifest). Pick another backup: ${SCRIPT_DIR}/list-stackgraph-backups.sh" ;;
    *) message="Restore of ${what} failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint restore)" ;;
  esac
  lib::finish "${JOB_RC}" "${message}"
}

main "$@"
