# Common setup and assertions of the restore-script tests, loaded by every
# tests/scripts/*.bats file. Each test gets a fresh ${STUB_DIR} with the
# fixtures the stub kubectl (tests/scripts/stub/kubectl) answers from.
# shellcheck shell=bash
# shellcheck disable=SC2034  # RESTORE, status, output, stderr: read by tests

ROOT="$(cd "${BATS_TEST_DIRNAME}/../.." && pwd -P)"
RESTORE="${ROOT}/scripts/restore"
FIXTURES="${BATS_TEST_DIRNAME}/fixtures"
CM=sts-backup-job-templates

common_setup() {
  bats_require_minimum_version 1.5.0
  load '/usr/lib/bats/bats-support/load'
  load '/usr/lib/bats/bats-assert/load'
  STUB_DIR="${BATS_TEST_TMPDIR}/stub"
  export STUB_DIR
  export KUBECTL="${BATS_TEST_DIRNAME}/stub/kubectl"
  export STS_RESTORE_POLL_INTERVAL=0.01
  export STS_RESTORE_START_TIMEOUT=10
  export STS_RESTORE_SCALE_TIMEOUT=10
  export STS_RESTORE_RUN_TIMEOUT=10
  mkdir -p "${STUB_DIR}/cm"
  printf '%s\n' "${CM}" >"${STUB_DIR}/configmaps"
  cp "${FIXTURES}"/job-*.json "${STUB_DIR}/cm/"
  printf 'stackstate.com/connects-to-stackgraph=true\n' \
    >"${STUB_DIR}/cm/stackgraph-scale-down-selector"
  printf 'observability.suse.com/scalable-during-es-restore=true\n' \
    >"${STUB_DIR}/cm/elasticsearch-scale-down-selector"
  phases 'pod-1 Pending' 'pod-1 Running' 'pod-1 Succeeded 0'
  : >"${STUB_DIR}/calls"
}

# phases LINE...: the job pod's status answers, one per poll.
phases() { printf '%s\n' "$@" >"${STUB_DIR}/phases"; }

# fixture NAME LINE...: writes a fixture file.
fixture() {
  local name=$1
  shift
  printf '%s\n' "$@" >"${STUB_DIR}/${name}"
}

# q ARGS...: one recorded call line, as the stub writes it.
q() {
  local line="" arg
  for arg in "$@"; do
    line+="${line:+ }$(printf '%q' "${arg}")"
  done
  printf '%s' "${line}"
}

# assert_called ARGS...: the stub saw exactly this call.
assert_called() {
  local line
  line=$(q "$@")
  grep -Fxq -- "${line}" "${STUB_DIR}/calls" \
    || fail "$(printf 'call not recorded:\n  %s\ncalls:\n%s' "${line}" "$(cat "${STUB_DIR}/calls")")"
}

# call_line ARGS...: prints the line number of the first such call.
call_line() {
  grep -Fxn -- "$(q "$@")" "${STUB_DIR}/calls" | head -n 1 | cut -d: -f1
}

# assert_before "A..." "B...": call A (words split on spaces) precedes call B.
assert_order() {
  local -a first second
  read -r -a first <<<"$1"
  read -r -a second <<<"$2"
  local a b
  a=$(call_line "${first[@]}")
  b=$(call_line "${second[@]}")
  [[ -n ${a} && -n ${b} && ${a} -lt ${b} ]] \
    || fail "$(printf 'expected\n  %s (line %s)\nbefore\n  %s (line %s)\ncalls:\n%s' "$1" "${a}" "$2" "${b}" "$(cat "${STUB_DIR}/calls")")"
}

# refute_verb VERB: no call with this kubectl verb.
refute_verb() {
  if grep -Eq "(^| )$1( |$)" "${STUB_DIR}/calls"; then
    fail "$(printf 'unexpected %s call:\n%s' "$1" "$(cat "${STUB_DIR}/calls")")"
  fi
}

# count_calls ARGS...: how often exactly this call was made.
count_calls() { grep -Fxc -- "$(q "$@")" "${STUB_DIR}/calls" || true; }

# manifest_get [N] EXPR: evaluates a Python expression on manifest N (default 1)
# as `m`; `env(container, name)` gives an env value. Prints it as JSON.
manifest_get() {
  local n=1
  if (($# == 2)); then
    n=$1
    shift
  fi
  python3 - "${STUB_DIR}/manifest-${n}.json" "$1" <<'PY'
import json, sys
with open(sys.argv[1], encoding="utf-8") as f:
    m = json.load(f)
def env(container, name):
    for c in m["spec"]["template"]["spec"]["containers"]:
        if c["name"] == container:
            return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}[name]
    raise KeyError(container)
print(json.dumps(eval(sys.argv[2]), ensure_ascii=False))
PY
}

# job_name: the name of the created Job (from the manifest).
job_name() { manifest_get 'm["metadata"]["name"]' | tr -d '"'; }

# assert_template_read KEY [FLAGS...]: the label lookup and the read of data
# key KEY happened (with the global FLAGS first).
assert_template_read() {
  local key=$1
  shift
  assert_called "$@" get configmap -l sts-backup.io/job-templates=true \
    -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}'
  assert_called "$@" get configmap "${CM}" -o "jsonpath={.data.${key//./\\.}}"
}

# The poll of the job's pod for CONTAINER.
pod_query() {
  printf '%s' 'jsonpath={range .items[*]}{.metadata.name}{" "}{.status.phase}{" "}'
  printf '{.status.containerStatuses[?(@.name=="%s")].state.terminated.exitCode}' "$1"
  printf '%s' '{"\n"}{end}'
}

# run_bg SCRIPT ARGS...: starts a script in the background with job control
# on, so that SIGINT is not ignored in it; sets BG_PID. Output goes to
# ${BATS_TEST_TMPDIR}/out and .../err.
run_bg() {
  set -m
  "$@" >"${BATS_TEST_TMPDIR}/out" 2>"${BATS_TEST_TMPDIR}/err" &
  BG_PID=$!
  set +m
}

# wait_for_file FILE: waits up to 10 s for FILE to exist.
wait_for_file() {
  local i
  for ((i = 0; i < 1000; i++)); do
    [[ ! -e $1 ]] || return 0
    sleep 0.01
  done
  fail "timed out waiting for $1"
}

# interrupt SIGNAL SCRIPT ARGS...: runs the script until the stub blocks in
# `logs`, sends SIGNAL, and sets status, output (stdout) and stderr.
interrupt() {
  local signal=$1
  shift
  touch "${STUB_DIR}/block-logs"
  run_bg "$@"
  wait_for_file "${STUB_DIR}/blocked"
  kill "-${signal}" "${BG_PID}"
  status=0
  wait "${BG_PID}" || status=$?
  output=$(cat "${BATS_TEST_TMPDIR}/out")
  stderr=$(cat "${BATS_TEST_TMPDIR}/err")
}

# without_orchestration KEY: rewrites the stub ConfigMap's template KEY as the
# chart renders it with orchestration off (no STS_* env in its container).
without_orchestration() {
  python3 - "${STUB_DIR}/cm/$1" <<'PY'
import json, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    job = json.load(f)
c = job["spec"]["template"]["spec"]["containers"][0]
c["env"] = [e for e in c["env"] if not e["name"].startswith("STS_")]
with open(path, "w", encoding="utf-8") as f:
    json.dump(job, f, indent=2, sort_keys=True)
PY
}
