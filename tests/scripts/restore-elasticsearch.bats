#!/usr/bin/env bats
# restore-elasticsearch-snapshot.sh with the real kubectl against the API double: job env, the
# refusal without -force, -force reaching the orchestrated Job (which scales
# the writers itself), the pass-through of --latest, --allow-partial and
# --rename-to, and names passed verbatim for the binary to judge.
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

readonly SCRIPT=restore-elasticsearch-snapshot.sh
readonly SNAP=sts-backup-20240101-0300-abcd1234

@test "without -force: no scaling, the job gets the snapshot, empty INDICES and force false" {
  fixture logs 'restored 3 shards'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}"
  assert_success
  assert_output 'restored 3 shards'
  local job
  job=$(job_name)
  [[ ${job} =~ ^elasticsearch-restore-[0-9]{8}t[0-9]{6}-[0-9a-f]{4}$ ]] || fail "bad job name ${job}"
  run manifest_get 'env("restore", "SNAPSHOT_NAME")'
  assert_output "\"${SNAP}\""
  run manifest_get 'env("restore", "INDICES_TO_RESTORE")'
  assert_output '""'
  run manifest_get 'env("restore", "RESTORE_FORCE")'
  assert_output '"false"'
  assert_template_read
  refute_workload_calls
  [[ $(pod_name) == "$(job_name)-"* ]] || fail "the log of no pod of the job was followed"
  assert_api "delete jobs ${job} Foreground"
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restored Elasticsearch snapshot ${SNAP} (indices: the configured pattern)."
}

@test "INDICES is passed through" {
  run --separate-stderr "${RESTORE}/${SCRIPT}" "${SNAP}" 'sts_topology*,.ds-sts_k8s_logs*'
  assert_success
  run manifest_get 'env("restore", "INDICES_TO_RESTORE")'
  assert_output '"sts_topology*,.ds-sts_k8s_logs*"'
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restored Elasticsearch snapshot ${SNAP} (indices: sts_topology*,.ds-sts_k8s_logs*)."
}

@test "exit 3 without -force: refused, the rerun command adds -force and quotes INDICES" {
  phases 'pod-1 Running' 'pod-1 Failed 3'
  fixture logs 'refusing: open indices would be overwritten: sts_topology, sts_k8s_logs'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}" 'sts*'
  assert_failure 3
  assert_output 'refusing: open indices would be overwritten: sts_topology, sts_k8s_logs'
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Not restored, nothing changed: refused for safety (reason above). If existing indices would be overwritten, rerun with -force (closes them; deletes only data stream backing indices): ${RESTORE}/${SCRIPT} -n sts ${SNAP} sts\\* -force or restore beside them with --rename-to restored-{}"
  assert_api "delete jobs $(job_name) Foreground"
  refute_workload_calls
}

@test "-force: force true; the orchestrated Job scales, the script touches no workload" {
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts -force "${SNAP}"
  assert_success
  run manifest_get 'env("restore", "RESTORE_FORCE")'
  assert_output '"true"'
  refute_workload_calls
  assert_api "delete jobs $(job_name) Foreground"
}

@test "-force and a failing restore (a shard failed): exit 1 passed through" {
  phases 'pod-1 Running' 'pod-1 Failed 1'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}" -force
  assert_failure 1
  refute_workload_calls
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restore of Elasticsearch snapshot ${SNAP} (indices: the configured pattern) failed (exit 1), see the log above. To keep the job for debugging, rerun: ${RESTORE}/${SCRIPT} -n sts ${SNAP} -force --keep"
}

@test "exit 3 despite -force: the rerun command does not repeat -force" {
  phases 'pod-1 Failed 3'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}" --force
  assert_failure 3
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Not restored, nothing changed: refused for safety (reason above). If existing indices would be overwritten, rerun with -force (closes them; deletes only data stream backing indices): ${RESTORE}/${SCRIPT} -n sts ${SNAP} --force or restore beside them with --rename-to restored-{}"
}

@test "-force: SIGTERM while following leaves the orchestrated Job running, exit 143" {
  interrupt TERM "${RESTORE}/${SCRIPT}" -n sts -force "${SNAP}"
  assert_equal "${status}" 143
  refute_api '^delete '
  refute_workload_calls
  [[ ${stderr} == *"===   follow it:   kubectl -n sts logs --follow job/$(job_name) -c restore"* ]]
}

@test "a template without orchestration: -force warns that nothing scales the writers, and the Job is deleted on Ctrl-C" {
  without_orchestration job-elasticsearch-restore.json
  interrupt INT "${RESTORE}/${SCRIPT}" -n sts -force "${SNAP}"
  assert_equal "${status}" 130
  [[ ${stderr} == *"!!! The chart renders this restore without orchestration"* ]]
  assert_api "delete jobs $(job_name) Foreground"
  refute_workload_calls
}

@test "snapshot names and index lists reach the job JSON-escaped: the binary judges them" {
  local name n=0
  for name in 'a/b' 'a"b' 'a b' $'a\nb' 'Snap' 'a,b' 'x"__FORCE__'; do
    run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts -- "${name}" "${name}"
    assert_success
    n=$((n + 1))
    run manifest_get "${n}" '[env("restore", "SNAPSHOT_NAME"), env("restore", "INDICES_TO_RESTORE"), env("restore", "RESTORE_FORCE")]'
    assert_output "$(python3 -c 'import json,sys; print(json.dumps([sys.argv[1], sys.argv[1], "false"], ensure_ascii=False))' "${name}")"
  done
}

@test "names with &, ' and non-ASCII that Elasticsearch allows reach the job intact" {
  local snap="it's&ok-é" indices="sts&x*"
  run --separate-stderr "${RESTORE}/${SCRIPT}" "${snap}" "${indices}"
  assert_success
  manifest_get 'm["kind"]' >/dev/null
  run manifest_get 'env("restore", "SNAPSHOT_NAME")'
  assert_output "\"${snap}\""
  run manifest_get 'env("restore", "INDICES_TO_RESTORE")'
  assert_output "\"${indices}\""
}

@test "without the new flags the job gets latest false, allow-partial false, no rename" {
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}"
  assert_success
  run manifest_get 'env("restore", "RESTORE_LATEST"), env("restore", "RESTORE_ALLOW_PARTIAL"), env("restore", "RESTORE_RENAME_TO")'
  assert_output '["false", "false", ""]'
}

@test "--latest [INDICES]: no NAME, the job gets RESTORE_LATEST and an empty SNAPSHOT_NAME" {
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --latest 'sts_topology*'
  assert_success
  run manifest_get 'env("restore", "SNAPSHOT_NAME"), env("restore", "INDICES_TO_RESTORE"), env("restore", "RESTORE_LATEST")'
  assert_output '["", "sts_topology*", "true"]'
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restored Elasticsearch the latest snapshot (indices: sts_topology*)."
  run --separate-stderr "${RESTORE}/${SCRIPT}" --latest "${SNAP}" 'sts*'
  assert_failure 2
  [[ ${stderr} == *'with --latest, expected only [INDICES], got 2 arguments'* ]] || fail "${stderr}"
}

@test "--allow-partial and --rename-to are passed through; a rename scales nothing down" {
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}" --allow-partial --rename-to 'restored-{}' -force
  assert_success
  run manifest_get 'env("restore", "RESTORE_ALLOW_PARTIAL"), env("restore", "RESTORE_RENAME_TO"), env("restore", "RESTORE_FORCE")'
  assert_output '["true", "restored-{}", "true"]'
  refute_workload_calls
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restored Elasticsearch snapshot ${SNAP} (indices: the configured pattern, renamed to restored-{})."
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}" --rename-to=copy-{}
  assert_success
  run manifest_get 2 'env("restore", "RESTORE_RENAME_TO")'
  assert_output '"copy-{}"'
}

@test "--rename-to without {} or without a value is a usage error before anything happens" {
  run --separate-stderr "${RESTORE}/${SCRIPT}" "${SNAP}" --rename-to restored
  assert_failure 2
  [[ ${stderr} == *'--rename-to needs a PATTERN with {}'* ]] || fail "${stderr}"
  run --separate-stderr "${RESTORE}/${SCRIPT}" "${SNAP}" --rename-to
  assert_failure 2
  assert_equal "$(api_calls)" ""
}

@test "the rerun hint after a failure repeats --latest, --allow-partial and --rename-to" {
  phases 'pod-1 Failed 1'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --latest --allow-partial --rename-to 'r-{}'
  assert_failure 1
  [[ $(tail -n 1 <<<"${stderr}") == *"rerun: ${RESTORE}/${SCRIPT} -n sts --latest --allow-partial --rename-to r-\\{\\} --keep" ]] \
    || fail "$(tail -n 1 <<<"${stderr}")"
}
