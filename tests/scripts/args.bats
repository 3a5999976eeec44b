#!/usr/bin/env bats
# Command-line handling common to the four restore scripts, and the
# ConfigMap/template lookup.
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

readonly SCRIPTS=(list-stackgraph-backups.sh list-elasticsearch-snapshots.sh
  restore-stackgraph-backup.sh restore-elasticsearch-snapshot.sh)

# args_for SCRIPT: valid positional arguments for SCRIPT.
args_for() {
  case $1 in
    restore-stackgraph-backup.sh) echo sts-backup-20240101-0300.graph ;;
    restore-elasticsearch-snapshot.sh) echo sts-backup-20240101-0300-abcd ;;
  esac
}

@test "-h and --help print usage to stdout and exit 0 without calling kubectl" {
  local script flag
  for script in "${SCRIPTS[@]}"; do
    for flag in -h --help; do
      run --separate-stderr "${RESTORE}/${script}" "${flag}"
      assert_success
      assert_line --index 0 "Usage: ${script} $(case ${script} in
        list-stackgraph*) echo '[-replica] [-o table|json] [-n NAMESPACE] [--context CONTEXT] [--keep]' ;;
        list-*) echo '[-o table|json] [-n NAMESPACE] [--context CONTEXT] [--keep]' ;;
        restore-stackgraph*) echo 'NAME [-replica] [-force] [--background] [-n NAMESPACE] [--context CONTEXT] [--keep]' ;;
        *) echo 'NAME [INDICES] [-force] [-n NAMESPACE] [--context CONTEXT] [--keep]' ;;
      esac)"
      assert_equal "${stderr}" ''
    done
  done
  assert_equal "$(api_calls)" ""
}

@test "an unknown flag prints usage to stderr and exits 2" {
  local script
  for script in "${SCRIPTS[@]}"; do
    # shellcheck disable=SC2046  # args_for prints zero or one word
    run --separate-stderr "${RESTORE}/${script}" $(args_for "${script}") --bogus
    assert_failure 2
    assert_equal "${output}" ''
    assert_equal "$(head -n 1 <<<"${stderr}")" "${script}: unknown flag: --bogus"
    [[ ${stderr} == *"Usage: ${script}"* ]] || fail "no usage in: ${stderr}"
  done
  assert_equal "$(api_calls)" ""
}

@test "list scripts refuse -force, restore scripts refuse -o" {
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -force
  assert_failure 2
  run --separate-stderr "${RESTORE}/list-elasticsearch-snapshots.sh" --force
  assert_failure 2
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh" x.graph -o json
  assert_failure 2
  assert_equal "$(head -n 1 <<<"${stderr}")" 'restore-stackgraph-backup.sh: unknown flag: -o'
  run --separate-stderr "${RESTORE}/restore-elasticsearch-snapshot.sh" snap -o json
  assert_failure 2
  assert_equal "$(api_calls)" ""
}

@test "bad option values and argument counts exit 2" {
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -o xml
  assert_failure 2
  assert_equal "$(head -n 1 <<<"${stderr}")" 'list-stackgraph-backups.sh: -o must be table or json, not xml'
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -o
  assert_failure 2
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" extra
  assert_failure 2
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -n 'Bad_NS'
  assert_failure 2
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh"
  assert_failure 2
  assert_equal "$(head -n 1 <<<"${stderr}")" 'restore-stackgraph-backup.sh: expected one backup NAME (or --latest), got 0 arguments'
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh" a.graph b.graph
  assert_failure 2
  run --separate-stderr "${RESTORE}/restore-elasticsearch-snapshot.sh"
  assert_failure 2
  run --separate-stderr "${RESTORE}/restore-elasticsearch-snapshot.sh" snap 'sts*' extra
  assert_failure 2
  assert_equal "$(api_calls)" ""
}

@test "--namespace and --context are passed on every kubectl call" {
  # A kubeconfig whose current context reaches no server: a call without
  # --context fails. The context "my ctx" defaults to the namespace "other": a
  # call without --namespace misses the release in sts.
  local kc="${BATS_TEST_TMPDIR}/kubeconfig" script n=0
  cp "${KUBECONFIG}" "${kc}"
  KUBECONFIG=${kc} kubectl config set-context 'my ctx' --cluster="$(kubectl config view -o jsonpath='{.clusters[0].name}')" \
    --user="$(kubectl config view -o jsonpath='{.users[0].name}')" --namespace=other >/dev/null
  KUBECONFIG=${kc} kubectl config set-context c2 --cluster="$(kubectl config view -o jsonpath='{.clusters[0].name}')" \
    --user="$(kubectl config view -o jsonpath='{.users[0].name}')" >/dev/null
  KUBECONFIG=${kc} kubectl config set-cluster nowhere --server=https://127.0.0.1:1 >/dev/null
  KUBECONFIG=${kc} kubectl config set-context nowhere --cluster=nowhere --user="$(kubectl config view -o jsonpath='{.users[0].name}')" >/dev/null
  KUBECONFIG=${kc} kubectl config use-context nowhere >/dev/null
  for script in "${SCRIPTS[@]}"; do
    # shellcheck disable=SC2046  # args_for prints zero or one word
    KUBECONFIG=${kc} run "${RESTORE}/${script}" --context 'my ctx' $(args_for "${script}") -n sts
    assert_success
    assert_equal "$(api_namespaces)" sts
    n=$((n + 1))
    manifest_get "${n}" 'm["kind"]' >/dev/null || fail "${script} created no Job"
  done
  audit_mark
  KUBECONFIG=${kc} run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" --namespace=other --context=c2
  assert_failure 1
  [[ ${stderr} == *"no ConfigMap with label sts-backup.io/job-templates=true in the namespace other"* ]] || fail "${stderr}"
  assert_api 'list configmaps sts-backup.io/job-templates=true'
  assert_equal "$(api_namespaces)" other
}

@test "no template ConfigMap: exit 1 with a clear message" {
  kubectl delete configmap "${CM}" -n sts >/dev/null
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -n sts
  assert_failure 1
  assert_equal "${stderr}" 'ERROR: no ConfigMap with label sts-backup.io/job-templates=true in the namespace sts; is the sts-backup chart installed there (use -n NAMESPACE)?'
  refute_api '^create '
}

@test "two template ConfigMaps: exit 1 naming both" {
  kubectl delete configmap "${CM}" -n sts >/dev/null
  put_templates a-templates
  put_templates b-templates
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh"
  assert_failure 1
  assert_equal "${stderr}" 'ERROR: more than one ConfigMap with label sts-backup.io/job-templates=true in the namespace: a-templates b-templates'
}

@test "a missing template names the chart value to set, for each script" {
  local script key value
  for script in "${SCRIPTS[@]}"; do
    case ${script} in
      list-stackgraph*) key=job-stackgraph-list.json value=backup.stackGraph.restore.enabled ;;
      restore-stackgraph*) key=job-stackgraph-restore.json value=backup.stackGraph.restore.enabled ;;
      list-elasticsearch*) key=job-elasticsearch-list.json value=backup.elasticsearch.restore.enabled ;;
      *) key=job-elasticsearch-restore.json value=backup.elasticsearch.restore.enabled ;;
    esac
    rm "${TEMPLATES}/${key}"
    kubectl delete configmap "${CM}" -n sts >/dev/null
    put_templates "${CM}"
    audit_mark
    # shellcheck disable=SC2046  # args_for prints zero or one word
    run --separate-stderr "${RESTORE}/${script}" $(args_for "${script}")
    assert_failure 1
    assert_equal "${stderr}" "ERROR: ConfigMap ${CM} has no ${key}: set ${value}=true in the chart values and upgrade the release"
    assert_template_read "${key}"
    refute_api '^create '
    refute_workload_calls
    cp "${FIXTURES}/${key}" "${TEMPLATES}/"
  done
}

@test "a template without a required placeholder is refused before any change" {
  printf '{"metadata": {"name": "__JOB_NAME__"}}\n' >"${TEMPLATES}/job-stackgraph-restore.json"
  put_templates "${CM}"
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh" x.graph
  assert_failure 1
  assert_equal "${stderr}" 'ERROR: the job template has no placeholder "__BACKUP_NAME__"; the chart and the scripts do not match (see docs/interfaces.md)'
  refute_api '^create '
  refute_workload_calls
  refute_workload_calls
}
