# shellcheck shell=bash
# Shared code of the restore scripts in scripts/restore/: argument parsing,
# JSON escaping, rendering the chart's job templates, running a one-shot Job
# and following it, and cleanup that runs exactly once (also on Ctrl-C).
# No Kubernetes logic beyond that: an orchestrated restore Job locks the
# store and scales the writers itself (jobs/cluster); the scripts launch and
# follow it.
#
# Sourced by the scripts, not run. The contract with the chart and the jobs is
# docs/interfaces.md ("Chart -> restore scripts: the job-template ConfigMap").
#
# Exit codes of every script: the Job's, passed through —
#   0  success
#   1  runtime failure: no template ConfigMap, the template for the action is
#      missing (the message names the chart value to enable), kubectl failed,
#      a timeout, or the job failed (exit 1 of the job)
#   2  usage error or invalid name (nothing was changed; the job's binary
#      judges names, the scripts only escape them)
#   3  the job refused for safety, nothing changed: the target is not empty
#      (rerun with -force), or another restore or backup holds the store's lock
#   4  the job found an integrity failure (checksum mismatch, bad manifest)
#   130/143  interrupted by SIGINT/SIGTERM: a restore Job keeps running (it
#      finishes on its own; how to follow it is printed), a list Job is deleted
#
# Settings (environment):
#   KUBECTL                    kubectl command (default: kubectl)
#   STS_RESTORE_POLL_INTERVAL  seconds between status polls (default: 2)
#   STS_RESTORE_START_TIMEOUT  seconds for the job's pod to start (default: 900)
#   STS_RESTORE_RUN_TIMEOUT    seconds for the job to finish (default: 86400)

KUBECTL="${KUBECTL:-kubectl}"
readonly TEMPLATE_LABEL='sts-backup.io/job-templates=true'
readonly POLL_INTERVAL="${STS_RESTORE_POLL_INTERVAL:-2}"
readonly START_TIMEOUT="${STS_RESTORE_START_TIMEOUT:-900}"
readonly RUN_TIMEOUT="${STS_RESTORE_RUN_TIMEOUT:-86400}"

# Options and arguments (set by lib::parse_args).
NAMESPACE=""
CONTEXT=""
KEEP=false
FORCE=false
BACKGROUND=false
OUTPUT=table
ARGS=()
ORIG_ARGS=()
KUBE_FLAGS=()

# Run state (read by lib::cleanup).
CONFIGMAP=""
TEMPLATE=""
JOB_NAME=""
JOB_CREATED=false
JOB_RC=1
POD_NAME=""
POD_PHASE=""
POD_EXIT=""
POD_SEEN=false
FOLLOW_PID=""
TMP_DIR=""
CLEANED_UP=false
# A restore Job outlives an interrupted script: it finishes (and scales back) on its own.
DETACH_ON_INTERRUPT=false
JOB_RUNNING=false
JOB_DETACHED=false
JOB_CONTAINER=""

lib::info() { printf '=== %s\n' "$*" >&2; }
lib::warn() { printf '!!! %s\n' "$*" >&2; }
lib::error() { printf 'ERROR: %s\n' "$*" >&2; }
lib::die() {
  lib::error "$*"
  exit 1
}

# Runs kubectl with the --context/--namespace flags the user gave.
lib::kubectl() { "${KUBECTL}" "${KUBE_FLAGS[@]}" "$@"; }

# Prints the kubectl command a user would type (for hints), words quoted.
lib::kubectl_hint() {
  local hint='kubectl'
  [[ -z ${CONTEXT} ]] || hint+=" --context $(printf '%q' "${CONTEXT}")"
  [[ -z ${NAMESPACE} ]] || hint+=" -n $(printf '%q' "${NAMESPACE}")"
  printf '%s %s' "${hint}" "$*"
}

# Prints this script's invocation, quoted, plus each EXTRA word it does not
# have yet (for "rerun with ..."; -force counts as given when FORCE is set).
lib::rerun_command() {
  local cmd word
  local -a words=("${ORIG_ARGS[@]}")
  for word in "$@"; do
    [[ ${word} != -force || ${FORCE} == false ]] || continue
    [[ " ${ORIG_ARGS[*]} " == *" ${word} "* ]] || words+=("${word}")
  done
  cmd="$(printf '%q' "$0")"
  for word in "${words[@]}"; do
    cmd+=" $(printf '%q' "${word}")"
  done
  printf '%s' "${cmd}"
}

# Usage error: message and usage to stderr, exit 2. Needs the script's usage().
lib::usage_error() {
  printf '%s: %s\n' "${0##*/}" "$1" >&2
  usage >&2
  exit 2
}

#######################################
# Parses the common flags.
# Arguments:
#   FEATURES  words enabling script-specific flags: "output" (-o), "force",
#             "background"
#   ARGS...   the script's arguments
# Globals set: NAMESPACE CONTEXT KEEP FORCE BACKGROUND OUTPUT ARGS ORIG_ARGS
#   KUBE_FLAGS
#######################################
lib::parse_args() {
  local features=" $1 "
  shift
  ORIG_ARGS=("$@")
  while (($# > 0)); do
    case $1 in
      -h | --help) usage; exit 0 ;;
      -n | --namespace | --context | -o | --output)
        (($# >= 2)) || lib::usage_error "$1 needs a value"
        lib::set_option "$1" "$2" "${features}"
        shift ;;
      --namespace=* | --context=* | -o=* | --output=*)
        lib::set_option "${1%%=*}" "${1#*=}" "${features}" ;;
      --keep) KEEP=true ;;
      --background)
        [[ ${features} == *' background '* ]] \
          || lib::usage_error "unknown flag: $(printf '%q' "$1")"
        BACKGROUND=true ;;
      -force | --force)
        [[ ${features} == *' force '* ]] \
          || lib::usage_error "unknown flag: $(printf '%q' "$1")"
        # shellcheck disable=SC2034  # FORCE is read by the restore scripts
        FORCE=true ;;
      --) shift; ARGS+=("$@"); break ;;
      -?*) lib::usage_error "unknown flag: $(printf '%q' "$1")" ;;
      *) ARGS+=("$1") ;;
    esac
    shift
  done
  KUBE_FLAGS=()
  [[ -z ${CONTEXT} ]] || KUBE_FLAGS+=(--context "${CONTEXT}")
  [[ -z ${NAMESPACE} ]] || KUBE_FLAGS+=(--namespace "${NAMESPACE}")
}

lib::set_option() {
  local flag=$1 value=$2 features=$3
  case ${flag} in
    -n | --namespace)
      [[ ${value} =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$ ]] \
        || lib::usage_error "invalid namespace: $(printf '%q' "${value}")"
      NAMESPACE=${value} ;;
    --context)
      [[ -n ${value} ]] || lib::usage_error "--context needs a value"
      CONTEXT=${value} ;;
    -o | --output)
      [[ ${features} == *' output '* ]] || lib::usage_error "unknown flag: ${flag}"
      [[ ${value} == table || ${value} == json ]] \
        || lib::usage_error "-o must be table or json, not $(printf '%q' "${value}")"
      OUTPUT=${value} ;;
  esac
}

#######################################
# Prints STRING escaped for use inside a JSON string (without the quotes):
# backslash and double quote are escaped, newline/tab/CR/backspace/form feed
# become \n \t \r \b \f, other control characters \u00XX. Pure bash.
#######################################
lib::json_escape() {
  local LC_ALL=C
  local string=$1 out="" char code i
  if [[ ${string} != *[\"\\[:cntrl:]]* ]]; then
    printf '%s' "${string}"
    return 0
  fi
  for ((i = 0; i < ${#string}; i++)); do
    char=${string:i:1}
    case ${char} in
      \") out+='\"' ;;
      \\) out+="\\\\" ;;
      $'\n') out+='\n' ;;
      $'\t') out+='\t' ;;
      $'\r') out+='\r' ;;
      $'\b') out+='\b' ;;
      $'\f') out+='\f' ;;
      [[:cntrl:]])
        printf -v code '\\u%04x' "'${char}"
        out+=${code} ;;
      *) out+=${char} ;;
    esac
  done
  printf '%s' "${out}"
}

#######################################
# Fills a job template: every whole JSON string "__KEY__" becomes the JSON
# string of VALUE. One left-to-right pass, so text inserted for one
# placeholder is never scanned again (a name such as x"__FORCE__ cannot turn
# into another placeholder). Every KEY must occur in the template.
# Arguments:
#   TEMPLATE    the Job manifest (JSON) from the ConfigMap
#   KEY=VALUE   placeholder name (without underscores) and raw value
# Outputs: the manifest on stdout. Returns 1 if a placeholder is missing.
#######################################
lib::render_template() {
  local rest=$1 out="" key kv matched
  shift
  local -A values=() seen=()
  for kv in "$@"; do
    values[${kv%%=*}]=$(lib::json_escape "${kv#*=}")
  done
  while [[ ${rest} == *'"__'* ]]; do
    out+=${rest%%'"__'*}
    rest=${rest#*'"__'}
    matched=false
    for key in "${!values[@]}"; do
      if [[ ${rest} == "${key}__\""* ]]; then
        out+="\"${values[${key}]}\""
        rest=${rest#"${key}__\""}
        seen[${key}]=1
        matched=true
        break
      fi
    done
    [[ ${matched} == true ]] || out+='"__'
  done
  out+=${rest}
  for key in "${!values[@]}"; do
    if [[ -z ${seen[${key}]:-} ]]; then
      lib::error "the job template has no placeholder \"__${key}__\"; the chart and the scripts do not match (see docs/interfaces.md)"
      return 1
    fi
  done
  printf '%s\n' "${out}"
}

# Prints a new unique job name: PREFIX-<UTC %Y%m%dt%H%M%S>-<4 hex>.
lib::job_name() {
  local name
  name="$1-$(date -u +%Y%m%dt%H%M%S)-$(printf '%04x' "$((RANDOM % 65536))")"
  ((${#name} <= 63)) || lib::die "job name ${name} is longer than 63 characters"
  printf '%s' "${name}"
}

# Installs the cleanup traps. Call once, after the arguments are checked.
lib::init() {
  trap 'lib::on_exit' EXIT
  trap 'lib::on_signal INT 130' INT
  trap 'lib::on_signal TERM 143' TERM
}

lib::on_exit() {
  local rc=$?
  lib::cleanup || true
  exit "${rc}"
}

lib::on_signal() {
  local signal=$1 rc=$2
  lib::warn "Interrupted (SIG${signal}); cleaning up"
  if [[ ${KEEP} == true && ${JOB_CREATED} == true ]]; then
    lib::warn "--keep: job ${JOB_NAME} is kept and may still be running"
  fi
  lib::cleanup || true
  if [[ ${JOB_DETACHED} == false ]]; then
    printf '=== Interrupted. To start again, run: %s\n' "$(lib::rerun_command)" >&2
  fi
  exit "${rc}"
}

# Prints how to follow, check and stop the running Job (container CONTAINER).
lib::detached_hint() {
  local container=$1
  lib::info "Job ${JOB_NAME} keeps running in the cluster and finishes on its own (it scales the writers back itself)."
  lib::info "  follow it:   $(lib::kubectl_hint logs --follow "job/${JOB_NAME}" -c "${container}")"
  lib::info "  its outcome: $(lib::kubectl_hint describe job "${JOB_NAME}") (Events RestoreCompleted/RestoreRefused/RestoreFailed)"
  lib::info "  stop it:     $(lib::kubectl_hint delete job "${JOB_NAME}") (the restore stops and scales the writers back)"
  lib::info "  delete it once finished: $(lib::kubectl_hint delete job "${JOB_NAME}")"
}

#######################################
# Stops following logs, deletes the Job (or keeps it: --keep, --background,
# or a restore Job that has not finished — it must not be stopped because this
# terminal went away) and removes the temp dir. Runs once; a signal during
# cleanup only interrupts the kubectl call in progress.
#######################################
lib::cleanup() {
  [[ ${CLEANED_UP} == false ]] || return 0
  CLEANED_UP=true
  trap 'lib::warn "cleanup in progress"' INT TERM
  if [[ -n ${FOLLOW_PID} ]]; then
    kill "${FOLLOW_PID}" 2>/dev/null || true
    wait "${FOLLOW_PID}" 2>/dev/null || true
    FOLLOW_PID=""
  fi
  if [[ ${JOB_CREATED} == true ]]; then
    if [[ ${DETACH_ON_INTERRUPT} == true && ${JOB_RUNNING} == true ]]; then
      JOB_DETACHED=true
      lib::detached_hint "${JOB_CONTAINER}"
    elif [[ ${KEEP} == true ]]; then
      lib::info "Kept job ${JOB_NAME} (--keep). Delete it with: $(lib::kubectl_hint delete job "${JOB_NAME}")"
    elif lib::kubectl delete job "${JOB_NAME}" --ignore-not-found \
      --cascade=foreground --wait=false >&2; then
      :
    else
      lib::warn "Could not delete job ${JOB_NAME}; delete it with: $(lib::kubectl_hint delete job "${JOB_NAME}")"
    fi
  fi
  [[ -z ${TMP_DIR} ]] || rm -rf "${TMP_DIR:?}"
}

#######################################
# Runs the cleanup, prints MESSAGE as the final line, exits with RC.
#######################################
lib::finish() {
  local rc=$1 message=$2
  lib::cleanup
  [[ -z ${message} ]] || printf '=== %s\n' "${message}" >&2
  exit "${rc}"
}

# Prints the value of data key KEY of the template ConfigMap (empty if absent).
lib::configmap_value() {
  local key=$1
  lib::kubectl get configmap "${CONFIGMAP}" \
    -o "jsonpath={.data.${key//./'\.'}}" \
    || lib::die "cannot read ConfigMap ${CONFIGMAP}"
}

#######################################
# Finds the template ConfigMap by label and loads data key KEY into TEMPLATE.
# Arguments:
#   KEY    e.g. job-stackgraph-restore.json
#   VALUE  the chart value that renders it, e.g. backup.stackGraph.restore.enabled
#######################################
lib::load_template() {
  local key=$1 value=$2 names where=""
  local -a found=()
  [[ -z ${NAMESPACE} ]] || where=" ${NAMESPACE}"
  names=$(lib::kubectl get configmap -l "${TEMPLATE_LABEL}" \
    -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}') \
    || lib::die "cannot list ConfigMaps in the namespace${where}"
  mapfile -t found < <(printf '%s' "${names}")
  if ((${#found[@]} == 0)); then
    lib::die "no ConfigMap with label ${TEMPLATE_LABEL} in the namespace${where}; is the sts-backup chart installed there (use -n NAMESPACE)?"
  elif ((${#found[@]} > 1)); then
    lib::die "more than one ConfigMap with label ${TEMPLATE_LABEL} in the namespace${where}: ${found[*]}"
  fi
  CONFIGMAP=${found[0]}
  TEMPLATE=$(lib::configmap_value "${key}") || exit 1
  if [[ -z ${TEMPLATE} ]]; then
    lib::die "ConfigMap ${CONFIGMAP} has no ${key}: set ${value}=true in the chart values and upgrade the release"
  fi
}

# Succeeds when the Job TEMPLATE (JSON) runs --orchestrate (env STS_ORCHESTRATE=true): the
# Job then takes the store's lock and scales the writers itself.
lib::orchestrated() {
  local template=$1
  [[ ${template} =~ \"name\":[[:space:]]*\"STS_ORCHESTRATE\",[[:space:]]*\"value\":[[:space:]]*\"true\" ]]
}

# Creates the Job from MANIFEST (JOB_NAME must be set).
lib::create_job() {
  lib::info "Starting job ${JOB_NAME}"
  JOB_CREATED=true
  printf '%s\n' "$1" | lib::kubectl create -f - >&2 \
    || lib::die "could not create job ${JOB_NAME}"
}

# Sleeps in the background so that a signal is handled at once.
lib::sleep() {
  sleep "$1" &
  wait "$!" || true
}

#######################################
# Reads the job's pod: POD_NAME, POD_PHASE and POD_EXIT (the exit code of
# container CONTAINER once terminated); empty when there is no pod. Sets
# POD_SEEN once a pod was there. Returns 1 (values kept) if kubectl failed.
#######################################
lib::read_pod() {
  local container=$1 out
  local jsonpath='{range .items[*]}{.metadata.name}{" "}{.status.phase}{" "}'
  jsonpath+="{.status.containerStatuses[?(@.name==\"${container}\")].state.terminated.exitCode}"
  jsonpath+='{"\n"}{end}'
  out=$(lib::kubectl get pods -l "job-name=${JOB_NAME}" -o "jsonpath=${jsonpath}") || return 1
  POD_NAME="" POD_PHASE="" POD_EXIT=""
  read -r POD_NAME POD_PHASE POD_EXIT <<<"${out%%$'\n'*}" || true
  [[ -z ${POD_NAME} ]] || POD_SEEN=true
}

#######################################
# Polls the job's pod until its phase is one of PHASES, for TIMEOUT seconds.
# Arguments: CONTAINER TIMEOUT PHASES...
# Returns 1 on timeout, 2 when the pod disappeared.
#######################################
lib::wait_for_phase() {
  local container=$1 deadline=$((SECONDS + $2))
  shift 2
  while :; do
    if lib::read_pod "${container}"; then
      if [[ -n ${POD_PHASE} && " $* " == *" ${POD_PHASE} "* ]]; then
        return 0
      fi
      [[ -n ${POD_NAME} || ${POD_SEEN} == false ]] || return 2
    fi
    ((SECONDS < deadline)) || return 1
    lib::sleep "${POLL_INTERVAL}"
  done
}

#######################################
# Waits for the job's pod to start, follows the logs of container CONTAINER
# (to stdout, or into FILE; with COPY also to stdout and into COPY), waits
# for the pod to end and sets JOB_RC to the container's exit code (1 when the
# pod did not start, vanished or the container never ran). With --background
# it returns (JOB_RC 0) as soon as the pod runs.
# Arguments: CONTAINER [FILE] [COPY]
#######################################
lib::run_job() {
  local container=$1 file=${2:-} copy=${3:-} rc=0
  JOB_CONTAINER=${container}
  lib::info "Waiting for the pod of job ${JOB_NAME} to start..."
  JOB_RC=1
  lib::wait_for_phase "${container}" "${START_TIMEOUT}" Running Succeeded Failed || rc=$?
  if ((rc == 1)); then
    lib::error "the pod of job ${JOB_NAME} did not start within ${START_TIMEOUT}s (phase: ${POD_PHASE:-no pod}); see: $(lib::kubectl_hint describe pods -l "job-name=${JOB_NAME}")"
    return 0
  fi
  if ((rc == 0)); then
    [[ ${POD_PHASE} != Running ]] || JOB_RUNNING=true
    if [[ ${BACKGROUND} == true && ${JOB_RUNNING} == true ]]; then
      lib::info "Job ${JOB_NAME} is running (--background)."
      JOB_RC=0
      return 0
    fi
    if [[ -n ${file} ]]; then
      "${KUBECTL}" "${KUBE_FLAGS[@]}" logs --follow "pod/${POD_NAME}" -c "${container}" >"${file}" &
    elif [[ -n ${copy} ]]; then
      "${KUBECTL}" "${KUBE_FLAGS[@]}" logs --follow "pod/${POD_NAME}" -c "${container}" > >(tee "${copy}") &
    else
      "${KUBECTL}" "${KUBE_FLAGS[@]}" logs --follow "pod/${POD_NAME}" -c "${container}" &
    fi
    FOLLOW_PID=$!
    wait "${FOLLOW_PID}" || lib::warn "following the logs of ${POD_NAME} failed"
    FOLLOW_PID=""
    lib::wait_for_phase "${container}" "${RUN_TIMEOUT}" Succeeded Failed || rc=$?
  fi
  if ((rc == 1)); then
    lib::error "job ${JOB_NAME} did not finish within ${RUN_TIMEOUT}s"
    return 0
  fi
  JOB_RUNNING=false
  if ((rc == 2)); then
    lib::error "the pod of job ${JOB_NAME} disappeared before it finished; see: $(lib::kubectl_hint describe job "${JOB_NAME}")"
  elif [[ ${POD_EXIT} =~ ^[0-9]+$ ]]; then
    JOB_RC=${POD_EXIT}
  elif [[ ${POD_PHASE} == Succeeded ]]; then
    JOB_RC=0
  else
    lib::error "container ${container} of ${POD_NAME} did not run; see: $(lib::kubectl_hint describe pod "${POD_NAME}")"
  fi
}

#######################################
# Runs a list job from MANIFEST and exits. In table mode the log goes to
# stdout; in json mode only the data line does, the rest goes to stderr.
# Arguments: MANIFEST WHAT (e.g. "StackGraph backups", for messages)
#######################################
lib::list_job() {
  local manifest=$1 what=$2
  if [[ ${OUTPUT} == json ]]; then
    TMP_DIR=$(mktemp -d "${TMPDIR:-/tmp}/sts-restore-XXXXXX")
  fi
  lib::create_job "${manifest}"
  if [[ ${OUTPUT} == table ]]; then
    lib::run_job list
  else
    lib::run_job list "${TMP_DIR}/log"
    if ! lib::print_data "${TMP_DIR}/log" && ((JOB_RC == 0)); then
      lib::error "the log of job ${JOB_NAME} has no JSON data line"
      JOB_RC=1
    fi
  fi
  ((JOB_RC != 0)) || lib::finish 0 ""
  lib::finish "${JOB_RC}" "Listing the ${what} failed (exit ${JOB_RC}), see the log above. $(lib::debug_hint list)"
}

# Prints how to inspect the job of container CONTAINER after a failure.
lib::debug_hint() {
  if [[ ${KEEP} == true ]]; then
    printf 'Its log: %s' "$(lib::kubectl_hint logs "job/${JOB_NAME}" -c "$1")"
  else
    printf 'To keep the job for debugging, rerun: %s' "$(lib::rerun_command --keep)"
  fi
}

# Prints the data line of a list log FILE (the first line starting with '[')
# to stdout and every other line to stderr. Returns 1 if there is none.
lib::print_data() {
  local line printed=false
  while IFS= read -r line || [[ -n ${line} ]]; do
    if [[ ${printed} == false && ${line} == '['* ]]; then
      printf '%s\n' "${line}"
      printed=true
    else
      printf '%s\n' "${line}" >&2
    fi
  done <"$1"
  [[ ${printed} == true ]]
}
