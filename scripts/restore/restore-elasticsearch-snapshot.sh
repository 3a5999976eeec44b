#!/usr/bin/env bash
# Restores an Elasticsearch snapshot through a one-shot Job made from the
# chart's job-elasticsearch-restore.json template. Without -force the job
# refuses (exit 3) when open indices would be overwritten; with -force the
# writer deployments are scaled to 0, the job deletes the conflicting indices
# and restores, and the deployments are scaled back (also on failure/Ctrl-C).
#
# Usage: scripts/restore/restore-elasticsearch-snapshot.sh NAME [INDICES]
#          [-force] [-n NAMESPACE] [--context CONTEXT] [--keep]

set -o errexit
set -o nounset
set -o pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/lib.sh"
readonly DEFAULT_SELECTOR='observability.suse.com/scalable-during-es-restore=true'

usage() {
  cat <<USAGE
Usage: ${0##*/} NAME [INDICES] [-force] [-n NAMESPACE] [--context CONTEXT] [--keep]

Restores the Elasticsearch snapshot NAME (see list-elasticsearch-snapshots.sh)
by running a one-shot Job from the sts-backup chart's job templates (needs
backup.elasticsearch.restore.enabled). INDICES is an optional comma-separated
list of indices or patterns (default: the configured pattern).

  -force, --force          delete the open indices the snapshot would overwrite;
                           the deployments matching the ConfigMap's
                           elasticsearch-scale-down-selector are scaled to 0
                           meanwhile and back to their previous replica counts
  -n, --namespace NS       namespace of the sts-backup release (default: current)
      --context CONTEXT    kubeconfig context (default: current)
      --keep               keep the Job afterwards, for debugging
  -h, --help               this help

Exit codes: 0 restored, 1 failure (also: any shard failed), 2 usage error or
invalid NAME/INDICES, 3 not restored because open indices would be
overwritten (use -force), 130/143 interrupted.
USAGE
}

main() {
  lib::parse_args "force" "$@"
  ((${#ARGS[@]} >= 1 && ${#ARGS[@]} <= 2)) \
    || lib::usage_error "expected NAME [INDICES], got ${#ARGS[@]} arguments"
  local name=${ARGS[0]} indices=${ARGS[1]:-} selector="" manifest message what
  lib::validate_snapshot_name "${name}" || exit 2
  lib::validate_indices "${indices}" || exit 2
  what="snapshot ${name} (indices: ${indices:-the configured pattern})"
  lib::init
  lib::load_template job-elasticsearch-restore.json backup.elasticsearch.restore.enabled
  if [[ ${FORCE} == true ]]; then
    selector=$(lib::scale_selector elasticsearch-scale-down-selector "${DEFAULT_SELECTOR}")
  fi
  JOB_NAME=$(lib::job_name elasticsearch-restore)
  manifest=$(lib::render_template "${TEMPLATE}" JOB_NAME="${JOB_NAME}" \
    SNAPSHOT_NAME="${name}" INDICES="${indices}" FORCE="${FORCE}")
  [[ -z ${selector} ]] || lib::scale_down "${selector}"
  lib::create_job "${manifest}"
  lib::run_job restore
  case ${JOB_RC} in
    0) message="Restored Elasticsearch ${what}." ;;
    3) message="Not restored: open indices would be overwritten (listed above). To delete them and restore, rerun: $(lib::rerun_command -force)" ;;
    *) message="Restore of Elasticsearch ${what} failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint restore)" ;;
  esac
  lib::finish "${JOB_RC}" "${message}"
}

main "$@"
