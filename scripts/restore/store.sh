# shellcheck shell=bash disable=SC2034  # the globals set here are read by lib.sh
# The list, restore and backup-now flows of a store (StackGraph, the configuration, every
# backup.stores entry), shared by the generic scripts (list-backups.sh STORE, restore-backup.sh
# STORE NAME, backup-now.sh STORE) and the StackState-named ones, which only name their store.
# Each script keeps its own name in messages and "rerun" hints ($0). Sourced after lib.sh.
#
# The chart renders per store: job-<store>-list.json, job-<store>-restore.json,
# job-<store>-finalize.json in the job-template ConfigMap (and, for a store with an off-site
# copy, job-<store>-list-replica.json and job-<store>-restore-replica.json: the same Jobs
# reading the copy, chosen with -replica), and the CronJob labelled
# sts-backup.io/store=<store>, app.kubernetes.io/component=<store>-backup (docs/interfaces.md).

# Set by store::select.
STORE=""
STORE_TITLE=""
STORE_VALUES=""
STORE_LIST_HINT=""
# Arguments that select the store in a generic script (its STORE), repeated in "rerun" hints.
STORE_ARGS=()
# Set by store::parse_replica: read the store's off-site copy instead of its primary storage.
REPLICA=false

#######################################
# Selects the store the script works on.
# Arguments: STORE [TITLE] — TITLE names it in messages (default: the store's name).
# Globals set: STORE STORE_TITLE STORE_VALUES (its chart key) STORE_LIST_HINT; the generic
#   scripts also set STORE_ARGS=("${STORE}").
#######################################
store::select() {
  local store=$1
  [[ ${store} =~ ^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$ ]] \
    || lib::usage_error "invalid STORE: $(printf '%q' "${store}") (the name of a store: stackgraph, configuration or a backup.stores key)"
  [[ ${store} != elasticsearch ]] \
    || lib::usage_error "Elasticsearch keeps snapshots, not store backups: use list-elasticsearch-snapshots.sh and restore-elasticsearch-snapshot.sh"
  STORE=${store}
  STORE_TITLE=${2:-${store}}
  case ${store} in
    stackgraph) STORE_VALUES=backup.stackGraph ;;
    configuration) STORE_VALUES=backup.configuration ;;
    *) STORE_VALUES=backup.stores.${store} ;;
  esac
  STORE_LIST_HINT="${SCRIPT_DIR}/list-backups.sh ${store}"
}

#######################################
# The generic scripts: the first argument that is not a flag (or a flag's value) is the STORE.
# Globals set: as store::select, STORE_ARGS=("${STORE}"), and REST: the other arguments.
#######################################
store::take_store() {
  local store="" arg
  REST=()
  while (($# > 0)); do
    arg=$1
    shift
    if [[ -z ${store} ]]; then
      case ${arg} in
        -h | --help) usage; exit 0 ;;
        -n | --namespace | --context | -o | --output)
          REST+=("${arg}")
          if (($# > 0)); then REST+=("$1"); shift; fi
          continue ;;
        -*) ;;
        *) store=${arg}; continue ;;
      esac
    fi
    REST+=("${arg}")
  done
  [[ -n ${store} ]] || lib::usage_error "expected a STORE (stackgraph, configuration or a backup.stores key)"
  store::select "${store}"
  STORE_ARGS=("${store}")
}

#######################################
# Takes -replica (--replica) out of the arguments.
# Globals set: REPLICA (true when given), REST (the other arguments), and, with
#   -replica, STORE_LIST_HINT names the copy too.
#######################################
store::parse_replica() {
  REPLICA=false REST=()
  while (($# > 0)); do
    case $1 in
      -replica | --replica) REPLICA=true ;;
      --) REST+=("$@"); break ;;
      *) REST+=("$1") ;;
    esac
    shift
  done
  if [[ ${REPLICA} == true && ${STORE_LIST_HINT} != *' -replica' ]]; then
    STORE_LIST_HINT+=" -replica"
  fi
}

#######################################
# Loads the job template ACTION (list or restore) of the selected store: the primary's, or
# with -replica the one the chart renders for the off-site copy.
#######################################
store::load_template() {
  if [[ ${REPLICA} == true ]]; then
    lib::load_template "job-${STORE}-$1-replica.json" "${STORE_VALUES}.replicate.enabled"
  else
    lib::load_template "job-${STORE}-$1.json" "${STORE_VALUES}.restore.enabled"
  fi
}

# Where the backups are read, in messages: "" or " (off-site copy)".
store::where() {
  [[ ${REPLICA} == false ]] || printf ' (off-site copy)'
}

# Usage of a list script (after store::select). Argument: how the script is called.
store::list_usage() {
  cat <<USAGE
Usage: ${0##*/} $1[-replica] [-o table|json] [-n NAMESPACE] [--context CONTEXT] [--keep]

Lists the ${STORE_TITLE} backups (name, size, time) by running a one-shot Job
from the sts-backup chart's job templates (needs ${STORE_VALUES}.restore.enabled).

  -replica, --replica      list the off-site copy (${STORE_VALUES}.replicate)
                           instead of the primary storage
  -o, --output table|json  table (default) or one JSON array line on stdout
  -n, --namespace NS       namespace of the sts-backup release (default: current)
      --context CONTEXT    kubeconfig context (default: current)
      --keep               keep the Job afterwards, for debugging
  -h, --help               this help

Exit codes: 0 ok, 1 failure, 2 usage error, 130/143 interrupted.
USAGE
}

# Lists the backups of the selected store; ARGS are the script's remaining arguments.
store::list() {
  store::parse_replica "$@"
  lib::parse_args "output" "${REST[@]}"
  ORIG_ARGS=("${STORE_ARGS[@]}" "$@")
  ((${#ARGS[@]} == 0)) || lib::usage_error "unexpected argument: $(printf '%q' "${ARGS[0]}")"
  lib::init
  store::load_template list
  JOB_NAME=$(lib::job_name "${STORE}-list-backups")
  local manifest
  manifest=$(lib::render_template "${TEMPLATE}" \
    JOB_NAME="${JOB_NAME}" OUTPUT_FORMAT="${OUTPUT}")
  lib::list_job "${manifest}" "${STORE_TITLE} backups$(store::where)"
}

# Usage of a restore script (after store::select). Argument: how the script is called.
store::restore_usage() {
  cat <<USAGE
Usage: ${0##*/} $1NAME [-replica] [-force] [--background] [-n NAMESPACE] [--context CONTEXT] [--keep]
       ${0##*/} $1--latest [-replica] [-force] [...]
       ${0##*/} $1--finalize [-n NAMESPACE] [--context CONTEXT] [--keep]

Restores the ${STORE_TITLE} backup NAME (see ${STORE_LIST_HINT#"${SCRIPT_DIR}/"}) by running
a one-shot Job from the sts-backup chart's job templates (needs
${STORE_VALUES}.restore.enabled), and follows its log. The Job itself takes
the store's lock, checks the backup and that the target is empty, scales the
writers (${STORE_VALUES}.restore.scaleDownSelector) to 0 and back to their
recorded replica counts, and records Events on itself. Interrupting this
script does not stop the restore: the Job finishes on its own.

      --latest             restore the newest committed backup (no NAME)
  -replica, --replica      restore from the off-site copy
                           (${STORE_VALUES}.replicate), e.g. when the primary
                           storage is lost; the same checks, lock and scaling
  -force, --force          restore into a target that holds data (the store's
                           importer overwrites it)
      --background         return once the Job runs; print how to follow it
      --finalize           scale back now what an interrupted restore left
                           scaled down (the next restore or backup also would)
  -n, --namespace NS       namespace of the sts-backup release (default: current)
      --context CONTEXT    kubeconfig context (default: current)
      --keep               keep the Job afterwards, for debugging
  -h, --help               this help

Exit codes (the Job's): 0 restored, 1 failure, 2 usage error or invalid NAME,
3 refused for safety, nothing changed (the target is not empty: use -force;
or another restore or backup holds the store's lock), 4 integrity failure of
the backup, 130/143 interrupted (the Job keeps running).
USAGE
}

# Parses --latest and --finalize out of the arguments into REST.
store::parse_restore_flags() {
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

store::finalize() {
  ((${#ARGS[@]} == 0)) || lib::usage_error "--finalize takes no NAME"
  [[ ${FORCE} == false && ${LATEST} == false && ${BACKGROUND} == false && ${REPLICA} == false ]] \
    || lib::usage_error "--finalize takes none of -force, --latest, --background, -replica"
  lib::init
  lib::load_template "job-${STORE}-finalize.json" "${STORE_VALUES}.orchestrate.enabled"
  JOB_NAME=$(lib::job_name "${STORE}-finalize")
  lib::create_job "$(lib::render_template "${TEMPLATE}" JOB_NAME="${JOB_NAME}")"
  lib::run_job finalize
  case ${JOB_RC} in
    0) lib::finish 0 "Nothing is left scaled down by a restore." ;;
    3) lib::finish 3 "Not finalized: a restore or backup holds the store's lock (see above); it scales back itself when it ends." ;;
    *) lib::finish "${JOB_RC}" "Finalize failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint finalize)" ;;
  esac
}

#######################################
# Restores a backup of the selected store. ARGS: the script's remaining arguments.
# Globals read: STORE_FORCE_HINT — what -force does, in the refusal message (default: the
# importer overwrites the data).
#######################################
store::restore() {
  store::parse_replica "$@"
  store::parse_restore_flags "${REST[@]}"
  lib::parse_args "force background" "${REST[@]}"
  ORIG_ARGS=("${STORE_ARGS[@]}" "$@")
  [[ ${FINALIZE} == false ]] || store::finalize
  local name="" what manifest message log
  if [[ ${LATEST} == true ]]; then
    ((${#ARGS[@]} == 0)) || lib::usage_error "--latest takes no NAME"
    what="the newest ${STORE_TITLE} backup$(store::where)"
  else
    ((${#ARGS[@]} == 1)) || lib::usage_error "expected one backup NAME (or --latest), got ${#ARGS[@]} arguments"
    name=${ARGS[0]}
    what="${STORE_TITLE} backup ${name}$(store::where)"
  fi
  lib::init
  store::load_template restore
  JOB_NAME=$(lib::job_name "${STORE}-restore")
  manifest=$(lib::render_template "${TEMPLATE}" JOB_NAME="${JOB_NAME}" \
    BACKUP_NAME="${name}" LATEST="${LATEST}" FORCE="${FORCE}")
  if lib::orchestrated "${TEMPLATE}"; then
    DETACH_ON_INTERRUPT=true
  else
    lib::warn "The chart renders this restore without orchestration (${STORE_VALUES}.orchestrate.enabled=false): nothing locks the store or scales its writers down; stop them yourself first."
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
        message="Not restored, nothing changed: ${STORE_TITLE} is not empty. ${STORE_FORCE_HINT:-To overwrite its data with} ${what#"${STORE_TITLE} "}, rerun: $(lib::rerun_command -force)"
      fi ;;
    4) message="Not restored: ${what} failed its integrity check (checksum mismatch or missing manifest). Pick another backup: ${STORE_LIST_HINT}" ;;
    *) message="Restore of ${what} failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint restore)" ;;
  esac
  lib::finish "${JOB_RC}" "${message}"
}

# Usage of a backup-now script (after store::select). Argument: how the script is called.
store::backup_now_usage() {
  cat <<USAGE
Usage: ${0##*/} $1[--background] [-n NAMESPACE] [--context CONTEXT] [--keep]

Takes a ${STORE_TITLE} backup now: creates a Job from the store's backup CronJob
(kubectl create job --from=cronjob/...; needs ${STORE_VALUES}.scheduled.enabled),
follows its log and exits with its exit code. The Job is the scheduled backup
itself: same export, checks, upload, lock and retention. Interrupting this
script does not stop the backup: the Job finishes on its own.

      --background         return once the Job runs; print how to follow it
  -n, --namespace NS       namespace of the sts-backup release (default: current)
      --context CONTEXT    kubeconfig context (default: current)
      --keep               keep the Job afterwards (it is deleted once it ended)
  -h, --help               this help

Exit codes (the Job's): 0 committed, 1 failure, 2 usage error or invalid values,
3 refused for safety, nothing written (a restore holds the store's lock, or a
backup of that name exists), 4 integrity failure, 130/143 interrupted (the Job
keeps running).
USAGE
}

# Prints the name of the selected store's backup CronJob (exactly one must exist).
store::cronjob() {
  local selector="sts-backup.io/store=${STORE},app.kubernetes.io/component=${STORE}-backup" names where=""
  local -a found=()
  [[ -z ${NAMESPACE} ]] || where=" ${NAMESPACE}"
  names=$(lib::kubectl get cronjobs -l "${selector}" \
    -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}') \
    || lib::die "cannot list CronJobs in the namespace${where}"
  mapfile -t found < <(printf '%s' "${names}")
  if ((${#found[@]} == 0)); then
    lib::die "no backup CronJob of store ${STORE} (label ${selector}) in the namespace${where}: set ${STORE_VALUES}.scheduled.enabled=true (and backup.enabled) and upgrade the release, or use -n NAMESPACE"
  elif ((${#found[@]} > 1)); then
    lib::die "more than one backup CronJob of store ${STORE} in the namespace${where}: ${found[*]}"
  fi
  printf '%s' "${found[0]}"
}

# Runs the selected store's scheduled backup now. ARGS: the script's remaining arguments.
store::backup_now() {
  lib::parse_args "background" "$@"
  ORIG_ARGS=("${STORE_ARGS[@]}" "$@")
  ((${#ARGS[@]} == 0)) || lib::usage_error "unexpected argument: $(printf '%q' "${ARGS[0]}")"
  lib::init
  local cronjob message
  cronjob=$(store::cronjob) || exit 1
  JOB_NAME=$(lib::job_name "${STORE}-backup-now")
  lib::info "Starting job ${JOB_NAME} from cronjob ${cronjob}"
  JOB_CREATED=true
  lib::kubectl create job "--from=cronjob/${cronjob}" "${JOB_NAME}" >&2 \
    || lib::die "could not create job ${JOB_NAME} from cronjob ${cronjob}"
  # A backup outlives an interrupted script, like a restore: it finishes (and unlocks) on its own.
  DETACH_ON_INTERRUPT=true
  lib::run_job backup
  if [[ ${BACKGROUND} == true && ${JOB_RUNNING} == true ]]; then
    lib::finish 0 "Started a ${STORE_TITLE} backup in job ${JOB_NAME}."
  fi
  case ${JOB_RC} in
    0) message="${STORE_TITLE} backup committed (job ${JOB_NAME}); list them with: ${STORE_LIST_HINT}" ;;
    3) message="Not backed up, nothing written: refused for safety (see above: a restore holds the store's lock, or a backup of that name exists)." ;;
    *) message="${STORE_TITLE} backup failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint backup)" ;;
  esac
  lib::finish "${JOB_RC}" "${message}"
}
