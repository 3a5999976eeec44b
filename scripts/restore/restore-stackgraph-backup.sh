#!/usr/bin/env bash
# Restores a StackGraph backup through a one-shot Job made from the chart's
# job-stackgraph-restore.json template. The workloads that write to the
# graph are scaled to 0 first and back to their recorded replica counts after
# the job, whatever its outcome: by the Job itself (--orchestrate, the chart's
# default), or by this script for a template without it (also on Ctrl-C).
#
# Usage: scripts/restore/restore-stackgraph-backup.sh NAME [-force]
#          [-n NAMESPACE] [--context CONTEXT] [--keep]

set -o errexit
set -o nounset
set -o pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/lib.sh"
readonly DEFAULT_SELECTOR='stackstate.com/connects-to-stackgraph=true'

usage() {
  cat <<USAGE
Usage: ${0##*/} NAME [-force] [-n NAMESPACE] [--context CONTEXT] [--keep]

Restores the StackGraph backup NAME (see list-stackgraph-backups.sh) by running
a one-shot Job from the sts-backup chart's job templates (needs
backup.stackGraph.restore.enabled). The deployments matching the ConfigMap's
stackgraph-scale-down-selector are scaled to 0 during the restore and back to
their previous replica counts (annotation ${REPLICAS_ANNOTATION}) afterwards:
by the Job itself when the chart renders it with --orchestrate (the default:
it also locks the store and finishes the restore if this terminal goes away),
otherwise by this script.

  -force, --force          delete the data in a non-empty StackGraph first
  -n, --namespace NS       namespace of the sts-backup release (default: current)
      --context CONTEXT    kubeconfig context (default: current)
      --keep               keep the Job afterwards, for debugging
  -h, --help               this help

Exit codes: 0 restored, 1 failure, 2 usage error or invalid NAME,
3 not restored because StackGraph is not empty (use -force),
4 integrity failure of the backup, 130/143 interrupted.
USAGE
}

main() {
  lib::parse_args "force" "$@"
  ((${#ARGS[@]} == 1)) || lib::usage_error "expected one backup NAME, got ${#ARGS[@]} arguments"
  local name=${ARGS[0]} selector manifest message
  lib::validate_backup_name "${name}" || exit 2
  lib::init
  lib::load_template job-stackgraph-restore.json backup.stackGraph.restore.enabled
  selector=$(lib::scale_selector stackgraph-scale-down-selector "${DEFAULT_SELECTOR}")
  JOB_NAME=$(lib::job_name stackgraph-restore)
  manifest=$(lib::render_template "${TEMPLATE}" JOB_NAME="${JOB_NAME}" \
    BACKUP_NAME="${name}" FORCE="${FORCE}")
  if lib::orchestrated "${TEMPLATE}"; then
    # The Job locks the store, scales the writers down and back itself (--orchestrate).
    lib::info "The restore Job scales the writers (${selector}) down and back itself"
  else
    lib::scale_down "${selector}"
  fi
  lib::create_job "${manifest}"
  lib::run_job restore
  case ${JOB_RC} in
    0) message="Restored StackGraph backup ${name}." ;;
    3) message="Not restored: StackGraph is not empty. To delete its data and restore ${name}, rerun: $(lib::rerun_command -force)" ;;
    4) message="Not restored: backup ${name} failed its integrity check (checksum mismatch or missing manifest). Pick another backup: ${SCRIPT_DIR}/list-stackgraph-backups.sh" ;;
    *) message="Restore of StackGraph backup ${name} failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint restore)" ;;
  esac
  lib::finish "${JOB_RC}" "${message}"
}

main "$@"
