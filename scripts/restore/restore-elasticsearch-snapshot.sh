#!/usr/bin/env bash
# Restores an Elasticsearch snapshot through a one-shot Job made from the
# chart's job-elasticsearch-restore.json template, and follows it. The job
# checks everything before it changes anything and refuses (exit 3) when
# existing indices would be overwritten; with -force it closes (or, for data
# stream backing indices, deletes) the conflicting indices and restores.
# Orchestrated (the chart's default) the Job also locks the store, scales the
# configured writers down right before it overwrites and back on every path,
# and records Events; this script only launches and follows it.
# --rename-to restores beside the live indices instead.
#
# Usage: scripts/restore/restore-elasticsearch-snapshot.sh NAME|--latest [INDICES]
#          [-force] [--allow-partial] [--rename-to PATTERN]
#          [-n NAMESPACE] [--context CONTEXT] [--keep]

set -o errexit
set -o nounset
set -o pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly SCRIPT_DIR
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "${SCRIPT_DIR}/lib.sh"

usage() {
  cat <<USAGE
Usage: ${0##*/} NAME [INDICES] [-force] [-n NAMESPACE] [--context CONTEXT] [--keep]
       ${0##*/} --latest [INDICES] [-force] [...]
       either form also takes [--allow-partial] [--rename-to PATTERN]

Restores the Elasticsearch snapshot NAME (see list-elasticsearch-snapshots.sh)
by running a one-shot Job from the sts-backup chart's job templates (needs
backup.elasticsearch.restore.enabled). INDICES is an optional comma-separated
list of indices or patterns (default: the configured pattern). Nothing is
changed before every check has passed (snapshot state and version, indices
present, templates of its data streams).

      --latest             restore the newest SUCCESS snapshot (no NAME)
  -force, --force          overwrite the existing indices the snapshot holds:
                           open indices are closed (the restore reopens them),
                           data streams are rolled over and their conflicting
                           backing indices deleted; the Job scales the writers
                           (backup.elasticsearch.restore.scaleDownSelector) to
                           0 meanwhile and back to their recorded counts
      --allow-partial      restore a PARTIAL snapshot: only its indices whose
                           shards all succeeded (the others are listed)
      --rename-to PATTERN  restore beside the live indices, {} standing for
                           the original name (e.g. restored-{}); never
                           overwrites, needs no -force, scales nothing down
  -n, --namespace NS       namespace of the sts-backup release (default: current)
      --context CONTEXT    kubeconfig context (default: current)
      --keep               keep the Job afterwards, for debugging
  -h, --help               this help

Exit codes: 0 restored, 1 failure (also: any shard failed, or no progress
for RESTORE_NO_PROGRESS_TIMEOUT), 2 usage error or invalid NAME/INDICES,
3 refused for safety and nothing changed (existing indices would be
overwritten: use -force or --rename-to; or the snapshot is FAILED, PARTIAL
without --allow-partial, or from an incompatible version), 130/143 interrupted.
USAGE
}

# Takes this script's own flags (--latest, --allow-partial, --rename-to) out of
# the arguments; the rest goes to lib::parse_args.
parse_restore_flags() {
  LATEST=false ALLOW_PARTIAL=false RENAME_TO="" REST=()
  while (($# > 0)); do
    case $1 in
      -latest | --latest) LATEST=true ;;
      -allow-partial | --allow-partial) ALLOW_PARTIAL=true ;;
      --rename-to | --rename-to=*)
        if [[ $1 == *=* ]]; then
          RENAME_TO=${1#*=}
        else
          (($# >= 2)) || lib::usage_error "--rename-to needs a value"
          RENAME_TO=$2
          shift
        fi
        # The job judges the name; only a pattern without {} is caught here.
        [[ ${RENAME_TO} == *'{}'* ]] \
          || lib::usage_error "--rename-to needs a PATTERN with {} for the original name, e.g. restored-{}" ;;
      --) REST+=("$@"); break ;;
      *) REST+=("$1") ;;
    esac
    shift
  done
}

main() {
  parse_restore_flags "$@"
  lib::parse_args "force" "${REST[@]}"
  # shellcheck disable=SC2034  # read by lib::rerun_command: repeat this script's own flags too
  ORIG_ARGS=("$@")
  local name="" indices="" manifest message what
  if [[ ${LATEST} == true ]]; then
    ((${#ARGS[@]} <= 1)) || lib::usage_error "with --latest, expected only [INDICES], got ${#ARGS[@]} arguments"
    indices=${ARGS[0]:-}
    what="the latest snapshot"
  else
    ((${#ARGS[@]} >= 1 && ${#ARGS[@]} <= 2)) \
      || lib::usage_error "expected NAME [INDICES] or --latest [INDICES], got ${#ARGS[@]} arguments"
    name=${ARGS[0]} indices=${ARGS[1]:-}
    what="snapshot ${name}"
  fi
  what+=" (indices: ${indices:-the configured pattern}${RENAME_TO:+, renamed to ${RENAME_TO}})"
  lib::init
  lib::load_template job-elasticsearch-restore.json backup.elasticsearch.restore.enabled
  JOB_NAME=$(lib::job_name elasticsearch-restore)
  manifest=$(lib::render_template "${TEMPLATE}" JOB_NAME="${JOB_NAME}" \
    SNAPSHOT_NAME="${name}" INDICES="${indices}" FORCE="${FORCE}" \
    LATEST="${LATEST}" ALLOW_PARTIAL="${ALLOW_PARTIAL}" RENAME_TO="${RENAME_TO}")
  if lib::orchestrated "${TEMPLATE}"; then
    DETACH_ON_INTERRUPT=true
  elif [[ ${FORCE} == true && -z ${RENAME_TO} ]]; then
    lib::warn "The chart renders this restore without orchestration (backup.elasticsearch.restore.orchestrate=false): nothing locks the store or scales its writers down; stop them yourself first."
  fi
  lib::create_job "${manifest}"
  lib::run_job restore
  case ${JOB_RC} in
    0) message="Restored Elasticsearch ${what}." ;;
    3) message="Not restored, nothing changed: refused for safety (reason above). If existing indices would be overwritten, rerun with -force (closes them; deletes only data stream backing indices): $(lib::rerun_command -force) or restore beside them with --rename-to restored-{}" ;;
    *) message="Restore of Elasticsearch ${what} failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint restore)" ;;
  esac
  lib::finish "${JOB_RC}" "${message}"
}

main "$@"
