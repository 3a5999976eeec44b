#!/usr/bin/env bats
# restore-elasticsearch-snapshot.sh against the stub kubectl: job env, the
# refusal without -force, scale down/up of the writers with -force, and the
# pass-through of --latest, --allow-partial and --rename-to.
# shellcheck disable=SC2154  # stderr is set by bats' run --separate-stderr

setup() {
  load helpers
  common_setup
  fixture deployments \
    'e2es|1|{"app.kubernetes.io/component":"e2es"}|' \
    'mm2es|2|{"app.kubernetes.io/component":"mm2es"}|'
}

readonly SCRIPT=restore-elasticsearch-snapshot.sh
readonly SNAP=sts-backup-20240101-0300-abcd1234
readonly SELECTOR=observability.suse.com/scalable-during-es-restore=true
readonly ANNOTATION=sts-backup.io/replicas-before-restore

assert_scaled_back() {
  assert_called --namespace sts scale deployment e2es --replicas=1
  assert_called --namespace sts annotate deployment e2es "${ANNOTATION}-"
  assert_called --namespace sts scale deployment mm2es --replicas=2
  assert_called --namespace sts annotate deployment mm2es "${ANNOTATION}-"
}

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
  assert_template_read job-elasticsearch-restore.json --namespace sts
  refute_verb scale
  refute_verb annotate
  if grep -F 'deployments' "${STUB_DIR}/calls"; then fail "deployments were listed"; fi
  assert_called --namespace sts logs --follow pod/pod-1 -c restore
  assert_called --namespace sts delete job "${job}" --ignore-not-found --cascade=foreground --timeout=120s
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
  assert_called --namespace sts delete job "$(job_name)" --ignore-not-found --cascade=foreground --timeout=120s
  refute_verb scale
}

@test "-force: writers scaled down with recorded counts, force true, scaled back" {
  fixture pods-left 'e2es-5c4d-xyz12' '' ''
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts -force "${SNAP}"
  assert_success
  run manifest_get 'env("restore", "RESTORE_FORCE")'
  assert_output '"true"'
  assert_called --namespace sts get configmap "${CM}" -o 'jsonpath={.data.elasticsearch-scale-down-selector}'
  assert_called --namespace sts get deployments -l "${SELECTOR}" -o 'jsonpath={range .items[*]}{.metadata.name}{"|"}{.spec.replicas}{"|"}{.spec.selector.matchLabels}{"|"}{.metadata.annotations.sts-backup\.io/replicas-before-restore}{"\n"}{end}'
  assert_called --namespace sts annotate deployment e2es --overwrite "${ANNOTATION}=1"
  assert_called --namespace sts annotate deployment mm2es --overwrite "${ANNOTATION}=2"
  assert_called --namespace sts scale deployment e2es --replicas=0
  assert_called --namespace sts scale deployment mm2es --replicas=0
  assert_equal "$(count_calls --namespace sts get pods -l app.kubernetes.io/component=e2es -o 'jsonpath={.items[*].metadata.name}')" 2
  assert_order "--namespace sts scale deployment mm2es --replicas=0" "--namespace sts create -f -"
  assert_order "--namespace sts logs --follow pod/pod-1 -c restore" "--namespace sts scale deployment e2es --replicas=1"
  assert_scaled_back
}

@test "-force and a failing restore (a shard failed): exit 1, still scaled back" {
  phases 'pod-1 Running' 'pod-1 Failed 1'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}" -force
  assert_failure 1
  assert_scaled_back
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Restore of Elasticsearch snapshot ${SNAP} (indices: the configured pattern) failed (exit 1), see the log above. To keep the job for debugging, rerun: ${RESTORE}/${SCRIPT} -n sts ${SNAP} -force --keep"
}

@test "exit 3 despite -force: the rerun command does not repeat -force" {
  phases 'pod-1 Failed 3'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts "${SNAP}" --force
  assert_failure 3
  assert_equal "$(tail -n 1 <<<"${stderr}")" "=== Not restored, nothing changed: refused for safety (reason above). If existing indices would be overwritten, rerun with -force (closes them; deletes only data stream backing indices): ${RESTORE}/${SCRIPT} -n sts ${SNAP} --force or restore beside them with --rename-to restored-{}"
  assert_scaled_back
}

@test "-force: SIGTERM while following the logs scales back and exits 143" {
  interrupt TERM "${RESTORE}/${SCRIPT}" -n sts -force "${SNAP}"
  assert_equal "${status}" 143
  assert_called --namespace sts delete job "$(job_name)" --ignore-not-found --cascade=foreground --timeout=120s
  assert_scaled_back
}

@test "-force: SIGINT while waiting for pods to go scales back and exits 130" {
  fixture pods-left 'e2es-5c4d-xyz12'
  STS_RESTORE_POLL_INTERVAL=0.2 run_bg "${RESTORE}/${SCRIPT}" -n sts -force "${SNAP}"
  wait_for_file "${STUB_DIR}/.count-pods-left"
  kill -INT "${BG_PID}"
  local rc=0
  wait "${BG_PID}" || rc=$?
  assert_equal "${rc}" 130
  refute_verb create
  assert_scaled_back
}

@test "hostile snapshot names and index lists are rejected before anything happens" {
  local name
  for name in 'a/b' 'a"b' 'a b' $'a\nb' 'Snap' '_x' 'a,b'; do
    run --separate-stderr "${RESTORE}/${SCRIPT}" "${name}"
    assert_failure 2
  done
  for name in 'sts*,a b' $'sts*\n' 'a"b' 'a/b' 'a,,b'; do
    run --separate-stderr "${RESTORE}/${SCRIPT}" "${SNAP}" "${name}"
    assert_failure 2
  done
  [[ ! -s ${STUB_DIR}/calls ]]
}

@test "names with &, ' and non-ASCII that Elasticsearch allows reach the job intact" {
  local snap="it's&ok-é" indices="sts&x*"
  run --separate-stderr "${RESTORE}/${SCRIPT}" "${snap}" "${indices}"
  assert_success
  python3 -c 'import json,sys; json.load(sys.stdin)' <"${STUB_DIR}/manifest-1.json"
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
  refute_verb scale
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
  [[ ! -s ${STUB_DIR}/calls ]]
}

@test "the rerun hint after a failure repeats --latest, --allow-partial and --rename-to" {
  phases 'pod-1 Failed 1'
  run --separate-stderr "${RESTORE}/${SCRIPT}" -n sts --latest --allow-partial --rename-to 'r-{}'
  assert_failure 1
  [[ $(tail -n 1 <<<"${stderr}") == *"rerun: ${RESTORE}/${SCRIPT} -n sts --latest --allow-partial --rename-to r-\\{\\} --keep" ]] \
    || fail "$(tail -n 1 <<<"${stderr}")"
}
