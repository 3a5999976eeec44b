#!/usr/bin/env bats
# list-stackgraph-backups.sh and list-elasticsearch-snapshots.sh with the real
# kubectl against the API double (scripted kubelet).
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

readonly JOB_RE='^stackgraph-list-backups-[0-9]{8}t[0-9]{6}-[0-9a-f]{4}$'

@test "table mode: creates the job, follows the list container, prints the table, deletes the job" {
  fixture logs 'NAME                              SIZE      TIME' \
    'sts-backup-20240101-0300.graph    1.2 GiB   2024-01-01T03:00:12Z'
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -n sts
  assert_success
  assert_output "$(cat "${BATS_TEST_TMPDIR}/logs")"
  local job
  job=$(job_name)
  [[ ${job} =~ ${JOB_RE} ]] || fail "bad job name ${job}"
  run manifest_get 'env("list", "OUTPUT_FORMAT")'
  assert_output '"table"'
  manifest_get 'm["kind"]' >/dev/null
  assert_template_read
  assert_api 'create jobs'
  assert_api "list pods job-name=${job}"
  [[ $(pod_name) == "$(job_name)-"* ]] || fail "the log of no pod of the job was followed"
  assert_api "delete jobs ${job} Foreground"
  assert_api_order "get pods/log $(pod_name)" "delete jobs ${job} Foreground"
  refute_workload_calls
}

@test "json mode: only the data line goes to stdout, the log lines to stderr" {
  fixture logs '{"level":"INFO","message":"listing s3://sts-stackgraph-backup"}' \
    '[{"name":"sts-backup-20240101-0300.graph","size":1234,"time":"2024-01-01T03:00:12Z"}]' \
    '{"level":"INFO","message":"done"}'
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -o json
  assert_success
  assert_output '[{"name":"sts-backup-20240101-0300.graph","size":1234,"time":"2024-01-01T03:00:12Z"}]'
  [[ ${stderr} == *'"message":"listing s3://sts-stackgraph-backup"'* ]]
  [[ ${stderr} == *'"message":"done"'* ]]
  run manifest_get 'env("list", "OUTPUT_FORMAT")'
  assert_output '"json"'
  assert_api "delete jobs $(job_name) Foreground"
}

@test "json mode: a log without a data line is a failure" {
  fixture logs 'some text'
  run --separate-stderr "${RESTORE}/list-elasticsearch-snapshots.sh" -o json
  assert_failure 1
  assert_output ''
  [[ ${stderr} == *"ERROR: the log of job $(job_name) has no JSON data line"* ]]
}

@test "elasticsearch: -o json through the elasticsearch list template" {
  fixture logs '[{"snapshot":"sts-backup-20240101-0300-abcd","state":"SUCCESS","start_time":"2024-01-01T03:00:00Z"}]'
  run --separate-stderr "${RESTORE}/list-elasticsearch-snapshots.sh" --output=json
  assert_success
  assert_output "$(cat "${BATS_TEST_TMPDIR}/logs")"
  assert_template_read
  [[ $(job_name) =~ ^elasticsearch-list-snapshots-[0-9]{8}t[0-9]{6}-[0-9a-f]{4}$ ]]
  run manifest_get 'env("list", "OUTPUT_FORMAT")'
  assert_output '"json"'
}

@test "a failing list job: its exit code, a hint to rerun with --keep, the job deleted" {
  phases 'pod-1 Running' 'pod-1 Failed 1'
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -n sts
  assert_failure 1
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Listing the StackGraph backups failed (exit 1), see the log above. To keep the job for debugging, rerun: ${RESTORE}/list-stackgraph-backups.sh -n sts --keep"
  assert_api "delete jobs $(job_name) Foreground"
}

@test "--keep keeps the job and prints the delete command" {
  phases 'pod-1 Succeeded 0'
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -n sts --keep
  assert_success
  refute_api '^delete '
  [[ ${stderr} == *"=== Kept job $(job_name) (--keep). Delete it with: kubectl -n sts delete job $(job_name)"* ]]
}

@test "a pod that never starts: bounded wait, exit 1, job deleted" {
  phases 'pod-1 Pending'
  # long enough for the Job controller to create the pod, which then stays Pending
  STS_RESTORE_START_TIMEOUT=2 run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh"
  assert_failure 1
  [[ ${stderr} == *"ERROR: the pod of job $(job_name) did not start within 2s (phase: Pending)"* ]] || fail "${stderr}"
  refute_api '^get pods/log'
  assert_api "delete jobs $(job_name) Foreground"
}

@test "a pod that fails before the list container runs: exit 1" {
  phases 'pod-1 Pending' 'pod-1 Failed'
  never_started
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh"
  assert_failure 1
  local pod
  pod=$(api_calls | awk '$1 == "list" && $2 == "pods" {next} $2 ~ /^pods/ {print $3; exit}')
  [[ ${stderr} == *"ERROR: container list of ${pod} did not run; see: kubectl describe pod ${pod}"* ]] || fail "${stderr}"
}

@test "a pod that disappears while running: exit 1 at once, not after the timeout" {
  # a phase a second: the script sees the pod running before it goes, even on a busy machine
  POD_STEP=1 phases 'pod-1 Running' ''
  STS_RESTORE_RUN_TIMEOUT=600 run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh"
  assert_failure 1
  [[ ${stderr} == *"ERROR: the pod of job $(job_name) disappeared before it finished; see: kubectl describe job $(job_name)"* ]] \
    || fail "${stderr}"
}

@test "a Job the API server refuses (422): exit 1, nothing left behind" {
  refuse_job_create job-stackgraph-list.json
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh"
  assert_failure 1
  [[ ${stderr} == *"ERROR: could not create job $(job_name)"* ]]
  refute_api '^get pods/log'
  assert_api "delete jobs $(job_name) Foreground"
}
