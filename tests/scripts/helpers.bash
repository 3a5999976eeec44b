# Common setup and assertions of the restore-script tests, loaded by every
# tests/scripts/*.bats file. The scripts run with the real kubectl against the
# Kubernetes API double of tests/cluster (started once per bats file by
# double_setup_file) in its scripted-kubelet mode: a test declares the job
# pod's phases, log lines and exit code (phases, fixture logs) and reads what
# the script asked of the API from the double's audit log (api_calls,
# manifest_get). Every test runs in the namespace sts, emptied before it.
# shellcheck shell=bash
# shellcheck disable=SC2034  # RESTORE, status, output, stderr: read by tests

ROOT="$(cd "${BATS_TEST_DIRNAME}/../.." && pwd -P)"
RESTORE="${ROOT}/scripts/restore"
FIXTURES="${BATS_TEST_DIRNAME}/fixtures"
CM=sts-backup-job-templates
# The ServiceAccounts the fixtures' pods run as: the API refuses a pod whose account is missing.
ACCOUNTS=(sts-sts-backup-orchestrate sts-sts-backup-jobs)

# Starts the API double (scripted kubelet) for the whole file: setup_file.
double_setup_file() {
  # shellcheck source=/dev/null  # tests/env.sh, checked on its own
  source "${ROOT}/tests/env.sh"
  DOUBLE_DIR="${BATS_FILE_TMPDIR}/double"
  mkdir -p "${DOUBLE_DIR}"
  "${ROOT}/.tools/venv/bin/python" "${ROOT}/tests/cluster/cluster.py" --dir "${DOUBLE_DIR}" --scripted-kubelet \
    >"${DOUBLE_DIR}/cluster.log" 2>&1 3>&- &
  printf '%s\n' "$!" >"${BATS_FILE_TMPDIR}/double.pid"
  local i
  for ((i = 0; i < 300; i++)); do
    [[ ! -e ${DOUBLE_DIR}/ready ]] || break
    sleep 0.05
  done
  [[ -e ${DOUBLE_DIR}/ready ]] || {
    cat "${DOUBLE_DIR}/cluster.log" >&2
    return 1
  }
  export DOUBLE_DIR KUBECONFIG="${DOUBLE_DIR}/admin.kubeconfig" KUBECACHEDIR="${DOUBLE_DIR}/kube-cache"
  local sa
  # the scripts' default namespace (no -n) is the kubeconfig's
  kubectl config set-context --current --namespace=sts >/dev/null
  kubectl create namespace sts >/dev/null
  for sa in "${ACCOUNTS[@]}"; do
    kubectl create serviceaccount "${sa}" -n sts >/dev/null
  done
}

double_teardown_file() {
  kill "$(<"${BATS_FILE_TMPDIR}/double.pid")" 2>/dev/null || true
}

# unit_setup: bats' assertions, no API double (tests of lib.sh functions).
unit_setup() {
  bats_require_minimum_version 1.5.0
  load '/usr/lib/bats/bats-support/load'
  load '/usr/lib/bats/bats-assert/load'
}

common_setup() {
  unit_setup
  export STS_RESTORE_POLL_INTERVAL=0.05
  export STS_RESTORE_START_TIMEOUT=10
  export STS_RESTORE_SCALE_TIMEOUT=10
  export STS_RESTORE_RUN_TIMEOUT=10
  unset KUBECTL
  # empty the namespace of the previous test's Jobs and pods, put the templates back
  kubectl delete jobs,pods,deployments,statefulsets --all -n sts --wait=false >/dev/null
  kubectl delete configmap -n sts -l sts-backup.io/job-templates=true >/dev/null
  TEMPLATES="${BATS_TEST_TMPDIR}/templates"
  mkdir -p "${TEMPLATES}"
  cp "${FIXTURES}"/job-*.json "${TEMPLATES}/"
  printf 'stackstate.com/connects-to-stackgraph=true' >"${TEMPLATES}/stackgraph-scale-down-selector"
  printf 'observability.suse.com/scalable-during-es-restore=true' >"${TEMPLATES}/elasticsearch-scale-down-selector"
  put_templates "${CM}"
  POD_PHASES='["Pending", "Running", "Succeeded"]' POD_EXIT=0 POD_LOGS='[]' POD_STARTED=true
  : >"${BATS_TEST_TMPDIR}/logs"
  write_pod_script
  # what the test's scripts ask of the API starts here in the audit log
  audit_mark
}

# audit_mark: api_calls and manifest_get see the requests made from now on.
audit_mark() { AUDIT_FROM=$(wc -c <"${DOUBLE_DIR}/audit.log"); }

# put_templates NAME: (re)creates the template ConfigMap NAME (the chart's is
# ${CM}) from ${TEMPLATES}, labelled as the chart labels it.
put_templates() {
  kubectl create configmap "$1" -n sts --from-file="${TEMPLATES}" --dry-run=client -o json \
    | python3 -c 'import json,sys; m=json.load(sys.stdin); m["metadata"]["labels"]={"sts-backup.io/job-templates":"true"}; print(json.dumps(m))' \
    | kubectl apply -n sts -f - >/dev/null
}

write_pod_script() {
  printf '[{"pod": ".", "phases": %s, "exit": %s, "logs": %s, "started": %s, "step": %s}]\n' \
    "${POD_PHASES}" "${POD_EXIT}" "${POD_LOGS}" "${POD_STARTED:-true}" "${POD_STEP:-0.1}" \
    >"${DOUBLE_DIR}/kubelet-script.json"
}

# phases "pod PHASE [EXITCODE]"...: the phases the job's pod goes through (the
# scripted kubelet, tests/cluster/scripted_kubelet.py), the exit code of its
# first container from the last one. Ending in Running, the pod runs until
# deleted; an empty line after others: the pod is gone (its Job deleted).
phases() {
  local -a words=()
  local line phases_json="" last=""
  for line in "$@"; do
    read -r -a words <<<"${line}"
    ((${#words[@]} > 0)) || {
      [[ -z ${last} ]] || phases_json+='"Gone", '
      continue
    }
    [[ ${words[1]} == "${last}" ]] || phases_json+="\"${words[1]}\", "
    last=${words[1]}
    POD_EXIT=${words[2]:-${POD_EXIT}}
  done
  [[ ${last} != Failed || ${#words[@]} -gt 2 ]] || POD_EXIT=1
  POD_PHASES="[${phases_json%, }]"
  write_pod_script
}

# never_started: the pod's containers never start (and leave no log).
never_started() {
  POD_STARTED=false
  write_pod_script
}

# fixture logs LINE...: the job pod's log (also in ${BATS_TEST_TMPDIR}/logs).
fixture() {
  [[ $1 == logs ]] || fail "fixture: only logs is scripted, got $1"
  shift
  printf '%s\n' "$@" >"${BATS_TEST_TMPDIR}/logs"
  POD_LOGS=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "$@")
  write_pod_script
}

# refuse_job_create KEY: the template KEY gets a misspelt field, so the API
# server refuses the Job (422, strict field validation) as a real one would.
refuse_job_create() {
  sed -i 's/"backoffLimit"/"backofLimit"/' "${TEMPLATES}/$1"
  put_templates "${CM}"
}

# api_calls: what the test's scripts asked of the API server, one request a line
# from the double's audit log: "VERB RESOURCE[/SUBRESOURCE] [NAME] [SELECTOR]
# [PROPAGATION]" (a delete's propagationPolicy); repeats of one line (polls)
# are collapsed into one.
api_calls() {
  tail -c "+$((AUDIT_FROM + 1))" "${DOUBLE_DIR}/audit.log" | python3 -c '
import json, sys, urllib.parse
last = None
for line in sys.stdin:
    e = json.loads(line)
    ref = e["objectRef"]
    words = [e["verb"], ref["resource"] + ("/" + ref["subresource"] if ref.get("subresource") else "")]
    if ref.get("name"):
        words.append(ref["name"])
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(e["requestURI"]).query)
    words += query.get("labelSelector", [])
    if e["verb"] == "delete":
        words.append((e.get("requestObject") or {}).get("propagationPolicy", "-"))
    out = " ".join(words)
    if out != last:
        print(out)
    last = out
'
}

# assert_api LINE: the scripts made this request (a line of api_calls).
assert_api() {
  api_calls | grep -Fxq -- "$1" || fail "$(printf 'request not made:\n  %s\nrequests:\n%s' "$1" "$(api_calls)")"
}

# refute_api REGEX: no request matches (an extended regular expression).
refute_api() {
  if api_calls | grep -Eq -- "$1"; then
    fail "$(printf 'unexpected request matching %s:\n%s' "$1" "$(api_calls)")"
  fi
}

# assert_api_order A B: request line A came before request line B.
assert_api_order() {
  local a b
  a=$(api_calls | grep -Fxn -- "$1" | head -n 1 | cut -d: -f1)
  b=$(api_calls | grep -Fxn -- "$2" | head -n 1 | cut -d: -f1)
  [[ -n ${a} && -n ${b} && ${a} -lt ${b} ]] \
    || fail "$(printf 'expected\n  %s (line %s)\nbefore\n  %s (line %s)\nrequests:\n%s' "$1" "${a}" "$2" "${b}" "$(api_calls)")"
}

# refute_workload_calls: the script never read, scaled or annotated a workload.
refute_workload_calls() {
  refute_api '^[a-z]+ (deployments|statefulsets|replicasets)'
}

# pod_name: the pod whose log the script followed.
pod_name() { api_calls | awk '$2 == "pods/log" {print $3; exit}'; }

# manifest_get [N] EXPR: evaluates a Python expression on the N-th Job
# (default 1) the test's scripts created, as the API received it (or on the
# JSON file ${MANIFEST_FILE} when set), as `m`; `env(container, name)` gives
# an env value. Prints it as JSON.
manifest_get() {
  local n=1
  if (($# == 2)); then
    n=$1
    shift
  fi
  if [[ -n ${MANIFEST_FILE:-} ]]; then
    python3 -c 'import json,sys; print(json.dumps({"verb": "create", "objectRef": {"resource": "jobs"}, "requestObject": json.load(sys.stdin)}))' <"${MANIFEST_FILE}"
  else
    tail -c "+$((AUDIT_FROM + 1))" "${DOUBLE_DIR}/audit.log"
  fi | python3 -c '
import json, sys
created = [e["requestObject"] for e in map(json.loads, sys.stdin)
           if e["verb"] == "create" and e["objectRef"]["resource"] == "jobs" and "requestObject" in e]
m = created[int(sys.argv[1]) - 1]
def env(container, name):
    for c in m["spec"]["template"]["spec"]["containers"]:
        if c["name"] == container:
            return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}[name]
    raise KeyError(container)
print(json.dumps(eval(sys.argv[2]), ensure_ascii=False))
' "${n}" "$1"
}

# job_name: the name of the created Job (from the manifest).
job_name() { manifest_get 'm["metadata"]["name"]' | tr -d '"'; }

# assert_template_read: the label lookup of the template ConfigMap and its read
# happened.
assert_template_read() {
  assert_api 'list configmaps sts-backup.io/job-templates=true'
  assert_api "get configmaps ${CM}"
}

# api_namespaces: the namespaces the test's scripts addressed, one a line.
api_namespaces() {
  tail -c "+$((AUDIT_FROM + 1))" "${DOUBLE_DIR}/audit.log" \
    | python3 -c 'import json,sys; print("\n".join(sorted({json.loads(l)["objectRef"].get("namespace", "-") for l in sys.stdin})))'
}

# run_bg SCRIPT ARGS...: starts a script in the background with job control
# on, so that SIGINT is not ignored in it; sets BG_PID. Output goes to
# ${BATS_TEST_TMPDIR}/out and .../err.
run_bg() {
  set -m
  # SIGINT/SIGQUIT ignored on entry (the suite started as a background job of a
  # non-interactive shell, e.g. under nohup) cannot be trapped by the script, and it would
  # follow the log forever: the script starts with them at their default.
  env --default-signal=INT,QUIT "$@" >"${BATS_TEST_TMPDIR}/out" 2>"${BATS_TEST_TMPDIR}/err" &
  BG_PID=$!
  set +m
}

# interrupt SIGNAL SCRIPT ARGS...: runs the script until it follows the log of
# the job's pod (which keeps running), sends SIGNAL, and sets status, output
# (stdout) and stderr.
interrupt() {
  local signal=$1 i
  shift
  phases 'pod Pending' 'pod Running'
  run_bg "$@"
  for ((i = 0; i < 200; i++)); do
    [[ -z $(pod_name) ]] || break
    sleep 0.05
  done
  [[ -n $(pod_name) ]] || fail "the script never followed the pod's log: $(api_calls)"
  sleep 0.2 # kubectl logs --follow is streaming
  kill "-${signal}" "${BG_PID}"
  status=0
  wait "${BG_PID}" || status=$?
  output=$(cat "${BATS_TEST_TMPDIR}/out")
  stderr=$(cat "${BATS_TEST_TMPDIR}/err")
}

# without_orchestration KEY: rewrites the template KEY in the ConfigMap as the
# chart renders it with orchestration off (no STS_* env in its container).
without_orchestration() {
  python3 - "${TEMPLATES}/$1" <<'PY'
import json, sys
path = sys.argv[1]
with open(path, encoding="utf-8") as f:
    job = json.load(f)
c = job["spec"]["template"]["spec"]["containers"][0]
c["env"] = [e for e in c["env"] if not e["name"].startswith("STS_")]
with open(path, "w", encoding="utf-8") as f:
    json.dump(job, f, indent=2, sort_keys=True)
PY
  put_templates "${CM}"
}
