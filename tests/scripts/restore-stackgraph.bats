#!/usr/bin/env bats
# restore-stackgraph-backup.sh with the real kubectl against the API double
# (scripted kubelet, tests/scripts/helpers.bash): the script only renders the
# Job, creates it, follows it and passes its exit code through;
# the orchestrated Job (STS_ORCHESTRATE=true in the template) locks and scales
# by itself, so the script never touches a workload and never stops a running
# restore because the terminal went away. The same script runs against the
# API double with the real kubectl in tests/cluster/test_orchestrate.py.
# shellcheck disable=SC2154  # stderr is set by bats' run --separate-stderr

setup_file() {
  load helpers
  double_setup_file
}

teardown_file() {
  load helpers
  double_teardown_file
}

setup() {
  load helpers
  common_setup
}

readonly SCRIPT=restore-stackgraph-backup.sh
readonly NAME=sts-backup-20240101-0300.graph

@test "restore: job with the name, follow, delete; nothing else" {
  fixture logs 'restoring' 'done'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_success
  assert_output $'restoring\ndone'
  local job
  job=$(job_name)
  [[ ${job} =~ ^stackgraph-restore-[0-9]{8}t[0-9]{6}-[0-9a-f]{4}$ ]] || fail "bad job name ${job}"
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restored StackGraph backup ${NAME}."
  run manifest_get 'env("restore", "BACKUP_NAME")'
  assert_output "\"${NAME}\""
  run manifest_get '[env("restore", "RESTORE_FORCE"), env("restore", "RESTORE_LATEST")]'
  assert_output '["false", "false"]'
  run manifest_get 'm["metadata"]["name"]'
  assert_output "\"${job}\""
  local pod
  pod=$(pod_name)
  [[ ${pod} == "${job}-"* ]] || fail "followed ${pod}, not a pod of ${job}"
  local expected
  expected=$(cat <<CALLS
list configmaps sts-backup.io/job-templates=true
get configmaps ${CM}
create jobs
list pods job-name=${job}
get pods ${pod}
get pods/log ${pod}
list pods job-name=${job}
delete jobs ${job} Foreground
CALLS
)
  assert_equal "$(api_calls)" "${expected}"
  assert_equal "$(api_namespaces)" sts
}

@test "-force and --latest reach the job only when given" {
  run "${RESTORE}/${SCRIPT}" -n sts -force "${NAME}"
  assert_success
  run manifest_get 'env("restore", "RESTORE_FORCE")'
  assert_output '"true"'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --latest
  assert_success
  run manifest_get 2 '[env("restore", "BACKUP_NAME"), env("restore", "RESTORE_LATEST"), env("restore", "RESTORE_FORCE")]'
  assert_output '["", "true", "false"]'
}

@test "--latest with a NAME, --finalize with a NAME or -force: usage error, no kubectl call" {
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --latest "${NAME}"
  assert_failure 2
  assert_equal "$(head -n 1 <<<"${stderr}")" "${SCRIPT}: --latest takes no NAME"
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --finalize "${NAME}"
  assert_failure 2
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --finalize -force
  assert_failure 2
  assert_equal "$(api_calls)" ""
}

@test "exit 3 (StackGraph not empty) is passed through with the command to rerun with -force" {
  phases 'pod-1 Running' 'pod-1 Failed 3'
  fixture logs 'error: the target holds data and restoring backup would overwrite it; nothing was changed.'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 3
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Not restored, nothing changed: StackGraph is not empty. To delete its data and restore backup ${NAME}, rerun: ${RESTORE}/${SCRIPT} -n sts ${NAME} -force"
  assert_api "delete jobs $(job_name) Foreground"
  refute_workload_calls
}

@test "exit 3 from the store's lock names the lock, not -force" {
  phases 'pod-1 Running' 'pod-1 Failed 3'
  fixture logs 'error: store "stackgraph" is locked by sts/stackgraph-restore-x (restore, since 2026-01-01T00:00:00Z); not starting another run'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 3
  assert_output --partial 'is locked by sts/stackgraph-restore-x (restore'
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Not restored, nothing changed: another restore or backup holds the store's lock (see above). Wait for it, then rerun: ${RESTORE}/${SCRIPT} -n sts ${NAME}"
}

@test "exit 4 (integrity failure) is passed through, job deleted" {
  phases 'pod-1 Running' 'pod-1 Failed 4'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 4
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Not restored: StackGraph backup ${NAME} failed its integrity check (checksum mismatch or missing manifest). Pick another backup: ${RESTORE}/list-stackgraph-backups.sh"
  assert_api "delete jobs $(job_name) Foreground"
}

@test "exit 1 with --keep: job kept, hint to read its log" {
  phases 'pod-1 Failed 1'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --keep "${NAME}"
  assert_failure 1
  refute_api '^delete '
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restore of StackGraph backup ${NAME} failed (exit 1), see the log above. Its log: kubectl -n sts logs job/$(job_name) -c restore"
}

@test "a Job the API server refuses (a misspelt field, 422): exit 1 naming the field, nothing else" {
  refuse_job_create job-stackgraph-restore.json
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_failure 1
  [[ ${stderr} == *'unknown field "spec.backofLimit"'* ]] || fail "no 422 in: ${stderr}"
  assert_api 'create jobs'
  refute_api '^(list|get) pods'
  refute_workload_calls
}

@test "SIGINT while following: the running restore Job is left to finish, how to follow it is printed, exit 130" {
  interrupt INT "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_equal "${status}" 130
  refute_api '^delete '
  refute_workload_calls
  local job
  job=$(job_name)
  [[ ${stderr} == *'!!! Interrupted (SIGINT); cleaning up'* ]]
  [[ ${stderr} == *"=== Job ${job} keeps running in the cluster and finishes on its own"* ]]
  [[ ${stderr} == *"===   follow it:   kubectl -n sts logs --follow job/${job} -c restore"* ]]
  [[ ${stderr} == *"===   stop it:     kubectl -n sts delete job ${job}"* ]]
}

@test "SIGTERM while following: same, once, exit 143" {
  interrupt TERM "${RESTORE}/${SCRIPT}" -n sts "${NAME}" -force
  assert_equal "${status}" 143
  refute_api '^delete '
  assert_equal "$(grep -c 'keeps running in the cluster' <<<"${stderr}")" 1
}

@test "--background: returns once the pod runs, follows nothing, keeps the Job, prints how to follow it" {
  phases 'pod-1 Pending' 'pod-1 Running'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --background "${NAME}"
  assert_success
  refute_api '^get pods/log'
  refute_api '^delete '
  local job
  job=$(job_name)
  [[ ${stderr} == *"===   follow it:   kubectl -n sts logs --follow job/${job} -c restore"* ]]
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Started the restore of StackGraph backup ${NAME} in job ${job}."
}

@test "--background on a Job that already ended: its exit code, as without it" {
  phases 'pod-1 Failed 3'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --background "${NAME}"
  assert_failure 3
  assert_api "delete jobs $(job_name) Foreground"
}

@test "--finalize: runs the finalize template and passes its exit through" {
  fixture logs 'scaled statefulset/graph (2) back'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --finalize
  assert_success
  assert_output 'scaled statefulset/graph (2) back'
  assert_template_read
  run manifest_get '[m["metadata"]["name"].startswith("stackgraph-finalize-"), m["spec"]["template"]["spec"]["containers"][0]["args"]]'
  assert_output '[true, ["finalize"]]'
  phases 'pod-1 Failed 3'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --finalize
  assert_failure 3
  [[ ${stderr} == *"Not finalized: a restore or backup holds the store's lock"* ]]
}

@test "names reach the job verbatim, JSON-escaped: the binary judges them" {
  local name n=0
  for name in 'a/b' 'a&b' 'x"y' 'a b' $'a\nb' '../../etc' "\$(touch ${BATS_TEST_TMPDIR}/pwned)" 'x"__FORCE__'; do
    run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts -- "${name}"
    assert_success
    n=$((n + 1))
    run manifest_get "${n}" '[env("restore", "BACKUP_NAME"), env("restore", "RESTORE_FORCE")]'
    assert_output "$(python3 -c 'import json,sys; print(json.dumps([sys.argv[1], "false"], ensure_ascii=False))' "${name}")"
  done
  [[ ! -e ${BATS_TEST_TMPDIR}/pwned ]]
}

@test "a template without orchestration: a warning, still no scaling from the script" {
  without_orchestration job-stackgraph-restore.json
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${NAME}"
  assert_success
  [[ ${stderr} == *"!!! The chart renders this restore without orchestration"* ]]
  refute_workload_calls
}
