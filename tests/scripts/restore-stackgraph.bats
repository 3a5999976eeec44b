#!/usr/bin/env bats
# restore-stackgraph-backup.sh against the stub kubectl: job env, scale down
# and back up with the recorded replica counts, exit codes, cleanup.
# shellcheck disable=SC2154  # stderr is set by bats' run --separate-stderr

setup() {
  load helpers
  common_setup
  fixture deployments \
    'server|1|{"app.kubernetes.io/component":"server","app.kubernetes.io/instance":"sts"}|' \
    'api|3|{"app.kubernetes.io/component":"api"}|'
}

readonly SCRIPT=restore-stackgraph-backup.sh
readonly NAME=sts-backup-20240101-0300.graph
readonly SELECTOR=stackstate.com/connects-to-stackgraph=true
readonly ANNOTATION=sts-backup.io/replicas-before-restore
readonly DEPLOY_QUERY='jsonpath={range .items[*]}{.metadata.name}{"|"}{.spec.replicas}{"|"}{.spec.selector.matchLabels}{"|"}{.metadata.annotations.sts-backup\.io/replicas-before-restore}{"\n"}{end}'

# assert_scaled_back: both deployments went back to 1 and 3 replicas and lost
# the annotation, after the job was deleted (unless --keep).
assert_scaled_back() {
  assert_called --namespace sts scale deployment server --replicas=1
  assert_called --namespace sts annotate deployment server "${ANNOTATION}-"
  assert_called --namespace sts scale deployment api --replicas=3
  assert_called --namespace sts annotate deployment api "${ANNOTATION}-"
  assert_order "--namespace sts scale deployment server --replicas=1" \
    "--namespace sts annotate deployment server ${ANNOTATION}-"
}

@test "restore: scale down with recorded counts, job with the name, follow, delete, scale back" {
  fixture logs 'restoring' 'done'
  fixture pods-left 'server-7d9f-abcde server-7d9f-fghij' 'server-7d9f-abcde' '' ''
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_success
  assert_output $'restoring\ndone'
  local job
  job=$(job_name)
  [[ ${job} =~ ^stackgraph-restore-[0-9]{8}t[0-9]{6}-[0-9a-f]{4}$ ]] || fail "bad job name ${job}"
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restored StackGraph backup ${NAME}."

  # The job: the backup name and no force.
  run manifest_get 'env("restore", "BACKUP_NAME")'
  assert_output "\"${NAME}\""
  run manifest_get 'env("restore", "RESTORE_FORCE")'
  assert_output '"false"'
  run manifest_get 'm["metadata"]["name"]'
  assert_output "\"${job}\""

  # The exact sequence of calls.
  local expected
  expected=$(cat <<CALLS
$(q --namespace sts get configmap -l sts-backup.io/job-templates=true -o 'jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}')
$(q --namespace sts get configmap "${CM}" -o 'jsonpath={.data.job-stackgraph-restore\.json}')
$(q --namespace sts get configmap "${CM}" -o 'jsonpath={.data.stackgraph-scale-down-selector}')
$(q --namespace sts get deployments -l "${SELECTOR}" -o "${DEPLOY_QUERY}")
$(q --namespace sts annotate deployment server --overwrite "${ANNOTATION}=1")
$(q --namespace sts scale deployment server --replicas=0)
$(q --namespace sts annotate deployment api --overwrite "${ANNOTATION}=3")
$(q --namespace sts scale deployment api --replicas=0)
$(q --namespace sts get pods -l app.kubernetes.io/component=server,app.kubernetes.io/instance=sts -o 'jsonpath={.items[*].metadata.name}')
$(q --namespace sts get pods -l app.kubernetes.io/component=server,app.kubernetes.io/instance=sts -o 'jsonpath={.items[*].metadata.name}')
$(q --namespace sts get pods -l app.kubernetes.io/component=server,app.kubernetes.io/instance=sts -o 'jsonpath={.items[*].metadata.name}')
$(q --namespace sts get pods -l app.kubernetes.io/component=api -o 'jsonpath={.items[*].metadata.name}')
$(q --namespace sts create -f -)
  stdin> manifest-1.json
$(q --namespace sts get pods -l "job-name=${job}" -o "$(pod_query restore)")
$(q --namespace sts get pods -l "job-name=${job}" -o "$(pod_query restore)")
$(q --namespace sts logs --follow pod/pod-1 -c restore)
$(q --namespace sts get pods -l "job-name=${job}" -o "$(pod_query restore)")
$(q --namespace sts delete job "${job}" --ignore-not-found --cascade=foreground --timeout=120s)
$(q --namespace sts scale deployment server --replicas=1)
$(q --namespace sts annotate deployment server "${ANNOTATION}-")
$(q --namespace sts scale deployment api --replicas=3)
$(q --namespace sts annotate deployment api "${ANNOTATION}-")
CALLS
)
  assert_equal "$(cat "${STUB_DIR}/calls")" "${expected}"
  [[ ${stderr} == *"=== Waiting for the pods of server to terminate: server-7d9f-abcde server-7d9f-fghij"* ]]
  [[ ${stderr} == *"===   - api (replicas: 0 -> 3)"* ]]
}

@test "-force is passed to the job only when given" {
  run "${RESTORE}/${SCRIPT}" -n sts -force "${NAME}"
  assert_success
  run manifest_get 'env("restore", "RESTORE_FORCE")'
  assert_output '"true"'
  : >"${STUB_DIR}/calls"
  rm -f "${STUB_DIR}"/.count-* "${STUB_DIR}"/manifest-*
  run "${RESTORE}/${SCRIPT}" -n sts "${NAME}" --force
  assert_success
  run manifest_get 'env("restore", "RESTORE_FORCE")'
  assert_output '"true"'
}

@test "an annotation left by an interrupted run is kept and used for scaling back" {
  fixture deployments \
    'server|0|{"app":"server"}|2' \
    'api|3|{"app":"api"}|'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_success
  if grep -F "annotate deployment server --overwrite" "${STUB_DIR}/calls"; then
    fail "the recorded count of server was overwritten"
  fi
  assert_called --namespace sts annotate deployment api --overwrite "${ANNOTATION}=3"
  assert_called --namespace sts scale deployment server --replicas=0
  assert_called --namespace sts scale deployment server --replicas=2
  assert_called --namespace sts annotate deployment server "${ANNOTATION}-"
  assert_called --namespace sts scale deployment api --replicas=3
  [[ ${stderr} == *"===   - server: keeping the replica count 2 recorded by an earlier run"* ]]
}

@test "the selector comes from the ConfigMap" {
  printf 'app.kubernetes.io/part-of=graph-writers' >"${STUB_DIR}/cm/stackgraph-scale-down-selector"
  run "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_success
  assert_called --namespace sts get deployments -l app.kubernetes.io/part-of=graph-writers -o "${DEPLOY_QUERY}"
}

@test "pods that do not go away: bounded wait, exit 1, no job, scaled back" {
  fixture pods-left 'server-7d9f-abcde'
  STS_RESTORE_SCALE_TIMEOUT=0 run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 1
  [[ ${stderr} == *"ERROR: pods of deployment server still there after 0s: server-7d9f-abcde"* ]]
  refute_verb create
  refute_verb delete
  assert_scaled_back
}

@test "exit 3 (StackGraph not empty) is propagated with the command to rerun with -force" {
  phases 'pod-1 Running' 'pod-1 Failed 3'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 3
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Not restored: StackGraph is not empty. To delete its data and restore ${NAME}, rerun: ${RESTORE}/${SCRIPT} -n sts ${NAME} -force"
  assert_called --namespace sts delete job "$(job_name)" --ignore-not-found --cascade=foreground --timeout=120s
  assert_scaled_back
  assert_order "--namespace sts delete job $(job_name) --ignore-not-found --cascade=foreground --timeout=120s" \
    "--namespace sts scale deployment server --replicas=1"
}

@test "exit 4 (integrity failure) is propagated, scaled back, job deleted" {
  phases 'pod-1 Running' 'pod-1 Failed 4'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 4
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Not restored: backup ${NAME} failed its integrity check (checksum mismatch or missing manifest). Pick another backup: ${RESTORE}/list-stackgraph-backups.sh"
  assert_called --namespace sts delete job "$(job_name)" --ignore-not-found --cascade=foreground --timeout=120s
  assert_scaled_back
}

@test "exit 1 with --keep: job kept, scaled back, hint to read its log" {
  phases 'pod-1 Failed 1'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --keep "${NAME}"
  assert_failure 1
  refute_verb delete
  assert_scaled_back
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restore of StackGraph backup ${NAME} failed (exit 1), see the log above. Its log: kubectl -n sts logs job/$(job_name) -c restore"
}

@test "a failing job create still scales back" {
  fixture fail-create 1
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 1
  assert_scaled_back
}

@test "a failing scale-back makes a successful restore exit 1 and prints the command" {
  fixture fail-annotate 1
  fixture deployments 'server|0|{"app":"server"}|2'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 1
  [[ ${stderr} == *"ERROR: could not scale server back; run: kubectl -n sts scale deployment server --replicas=2 && kubectl -n sts annotate deployment server ${ANNOTATION}-"* ]]
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restored StackGraph backup ${NAME}. But scaling back failed, see above."
}

@test "SIGINT while following the logs: job deleted, scaled back, exit 130" {
  interrupt INT "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_equal "${status}" 130
  assert_called --namespace sts delete job "$(job_name)" --ignore-not-found --cascade=foreground --timeout=120s
  assert_scaled_back
  assert_order "--namespace sts delete job $(job_name) --ignore-not-found --cascade=foreground --timeout=120s" \
    "--namespace sts scale deployment server --replicas=1"
  assert_equal "$(count_calls --namespace sts scale deployment api --replicas=3)" 1
  [[ ${stderr} == *'!!! Interrupted (SIGINT); cleaning up'* ]]
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Interrupted. To start again, run: ${RESTORE}/${SCRIPT} -n sts ${NAME}"
}

@test "SIGTERM while following the logs: same cleanup, once, exit 143" {
  interrupt TERM "${RESTORE}/${SCRIPT}" -n sts "${NAME}" -force
  assert_equal "${status}" 143
  assert_equal "$(count_calls --namespace sts delete job "$(job_name)" --ignore-not-found --cascade=foreground --timeout=120s)" 1
  assert_scaled_back
  assert_equal "$(count_calls --namespace sts scale deployment server --replicas=1)" 1
}

@test "SIGINT with --keep: job kept (with a warning), deployments scaled back" {
  interrupt INT "${RESTORE}/${SCRIPT}" -n sts --keep "${NAME}"
  assert_equal "${status}" 130
  refute_verb delete
  assert_scaled_back
  [[ ${stderr} == *"!!! --keep: job $(job_name) is kept and may still be running"* ]]
}

@test "a deployment without matchLabels: wait on its status.replicas instead" {
  fixture deployments 'server|1||'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_success
  assert_called --namespace sts get deployment server -o 'jsonpath={.status.replicas}'
  assert_called --namespace sts scale deployment server --replicas=1
}

@test "hostile backup names are rejected before anything happens" {
  local name
  for name in 'a/b' 'a&b' 'x"y' 'a b' $'a\nb' '../../etc' "\$(touch ${BATS_TEST_TMPDIR}/pwned)"; do
    run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${name}"
    assert_failure 2
  done
  [[ ! -s ${STUB_DIR}/calls ]]
  [[ ! -e ${BATS_TEST_TMPDIR}/pwned ]]
}

@test "restore: an orchestrated Job template (STS_ORCHESTRATE=true) scales nothing from the script" {
  python3 - "${STUB_DIR}/cm/job-stackgraph-restore.json" <<'PY'
import json, sys
path = sys.argv[1]
job = json.load(open(path))
job["spec"]["template"]["spec"]["containers"][0].setdefault("env", []).append(
    {"name": "STS_ORCHESTRATE", "value": "true"})
open(path, "w").write(json.dumps(job, indent=2, sort_keys=True))
PY
  fixture logs 'restoring' 'done'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_success
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restored StackGraph backup ${NAME}."
  [[ ${stderr} == *"The restore Job scales the writers (${SELECTOR}) down and back itself"* ]]
  run grep -E ' (scale|annotate) deployment|get deployments' "${STUB_DIR}/calls"
  assert_failure
  assert_called --namespace sts create -f -
}
