#!/usr/bin/env bats
# The scripts against the job templates the real chart renders (helm template
# of chart/ with both restore.enabled), put into the API double as the chart's
# ConfigMap: its name and label, every placeholder filled, a Job the API
# server accepts (strict validation), the env the jobs read. Skipped when
# helm, PyYAML or the chart is missing (tests/install-tools.sh installs them).
# shellcheck disable=SC2154  # stderr is set by bats' run --separate-stderr

setup_file() {
  local root
  root="$(cd "${BATS_TEST_DIRNAME}/../.." && pwd -P)"
  # shellcheck disable=SC1091  # from tests/install-tools.sh
  [[ ! -f ${root}/tests/env.sh ]] || source "${root}/tests/env.sh"
  export RENDERED="${BATS_FILE_TMPDIR}/rendered"
  mkdir -p "${RENDERED}"
  if ! command -v helm >/dev/null || ! python3 -c 'import yaml' 2>/dev/null \
    || [[ ! -f ${root}/chart/Chart.yaml ]]; then
    touch "${RENDERED}/skip"
    return 0
  fi
  load helpers
  double_setup_file
  helm template sts "${root}/chart" --namespace sts \
    -f "${root}/chart/examples/stackstate-5.1-local.yaml" \
    --set backup.stackGraph.restore.enabled=true \
    --set backup.elasticsearch.restore.enabled=true \
    --set backup.stackGraph.replicate.enabled=true \
    --set backup.stackGraph.replicate.bucketName=sts-stackgraph-offsite \
    --set backup.replicate.endpoint=https://offsite.example:9000 \
    --set backup.replicate.existingSecret=offsite-credentials \
    --show-only templates/configmap-job-templates.yaml >"${RENDERED}/cm.yaml"
  python3 - "${RENDERED}" <<'PY'
import os, sys, yaml
out = sys.argv[1]
import json
cm = yaml.safe_load(open(os.path.join(out, "cm.yaml"), encoding="utf-8"))
assert cm["metadata"]["labels"]["sts-backup.io/job-templates"] == "true"
with open(os.path.join(out, "configmaps"), "w", encoding="utf-8") as f:
    f.write(cm["metadata"]["name"] + "\n")
with open(os.path.join(out, "cm.json"), "w", encoding="utf-8") as f:
    json.dump(cm, f)
PY
}

teardown_file() {
  load helpers
  double_teardown_file
}

setup() {
  load helpers
  common_setup
  [[ ! -e ${RENDERED}/skip ]] || skip "helm, PyYAML or chart/ not available"
  # the chart's ConfigMap instead of the fixtures'
  kubectl delete configmap -n sts -l sts-backup.io/job-templates=true >/dev/null
  kubectl apply -n sts -f "${RENDERED}/cm.json" >/dev/null
  # shellcheck disable=SC2034  # CM is read by assert_template_read
  CM=$(<"${RENDERED}/configmaps")
  # a writer the scripts must leave alone (the orchestrated Jobs scale it)
  kubectl create deployment server -n sts --image=sts-backup/jobs:0.1.0 >/dev/null
  kubectl label deployment server -n sts stackstate.com/connects-to-stackgraph=true >/dev/null
  audit_mark
}

# assert_job CONTAINER PREFIX: the manifest is a valid Job named PREFIX-...
# with a container CONTAINER, and no placeholder is left.
assert_job() {
  run manifest_get '[c["name"] for c in m["spec"]["template"]["spec"]["containers"]]'
  assert_output "[\"$1\"]"
  run manifest_get 'm["kind"], m["spec"]["backoffLimit"], m["spec"]["template"]["spec"]["restartPolicy"]'
  assert_output '["Job", 0, "Never"]'
  [[ $(job_name) =~ ^$2-[0-9]{8}t[0-9]{6}-[0-9a-f]{4}$ ]] || fail "bad job name $(job_name)"
  if manifest_get 'm' | grep -E '"__[A-Z_]+__"'; then
    fail "placeholder left in the manifest"
  fi
}

@test "chart: list-stackgraph-backups.sh -o json" {
  fixture logs '[]'
  run --separate-stderr "${RESTORE}/list-stackgraph-backups.sh" -n sts -o json
  assert_success
  assert_template_read
  assert_job list stackgraph-list-backups
  run manifest_get 'env("list", "OUTPUT_FORMAT")'
  assert_output '"json"'
}

@test "chart: restore-stackgraph-backup.sh NAME -force" {
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh" -n sts sts-backup-20240101-0300.graph -force
  assert_success
  # The chart's Job runs --orchestrate: it scales the writers itself, the script does not.
  refute_workload_calls
  assert_job restore stackgraph-restore
  run manifest_get 'env("restore", "BACKUP_NAME"), env("restore", "RESTORE_FORCE")'
  assert_output '["sts-backup-20240101-0300.graph", "true"]'
  run manifest_get 'env("restore", "STS_ORCHESTRATE"), env("restore", "STS_SCALE_DOWN_SELECTOR")'
  assert_output '["true", "stackstate.com/connects-to-stackgraph=true"]'
}

@test "chart: list-elasticsearch-snapshots.sh" {
  run --separate-stderr "${RESTORE}/list-elasticsearch-snapshots.sh" -n sts
  assert_success
  assert_job list elasticsearch-list-snapshots
  run manifest_get 'env("list", "OUTPUT_FORMAT")'
  assert_output '"table"'
}

@test "chart: restore-elasticsearch-snapshot.sh NAME INDICES -force" {
  run --separate-stderr "${RESTORE}/restore-elasticsearch-snapshot.sh" -n sts snap-1 'sts*,.ds-sts_k8s_logs*' -force
  assert_success
  # The chart's Job runs --orchestrate for the elasticsearch store: it scales the writers itself.
  refute_workload_calls
  assert_job restore elasticsearch-restore
  run manifest_get 'env("restore", "SNAPSHOT_NAME"), env("restore", "INDICES_TO_RESTORE"), env("restore", "RESTORE_FORCE")'
  assert_output '["snap-1", "sts*,.ds-sts_k8s_logs*", "true"]'
  run manifest_get 'env("restore", "STS_ORCHESTRATE"), env("restore", "STS_STORE"), env("restore", "STS_SCALE_DOWN_SELECTOR")'
  assert_output '["true", "elasticsearch", "observability.suse.com/scalable-during-es-restore=true"]'
  run manifest_get 'm["spec"]["template"]["spec"]["serviceAccountName"], m["spec"]["template"]["spec"]["automountServiceAccountToken"]'
  assert_output '["sts-sts-backup-orchestrate", true]'
}

@test "chart: restore-stackgraph-backup.sh --finalize and --latest" {
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh" -n sts --finalize
  assert_success
  assert_job finalize stackgraph-finalize
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh" -n sts --latest
  assert_success
  run manifest_get 2 'env("restore", "BACKUP_NAME"), env("restore", "RESTORE_LATEST")'
  assert_output '["", "true"]'
}

@test "chart: list-backups.sh stackgraph -replica reads the off-site copy, only with its keys" {
  fixture logs '[]'
  run --separate-stderr "${RESTORE}/list-backups.sh" stackgraph -replica -n sts -o json
  assert_success
  assert_api "get configmaps ${CM}"
  assert_job list stackgraph-list-backups
  run manifest_get 'env("list", "BACKUP_STORAGE"), env("list", "S3_ENDPOINT"), env("list", "OUTPUT_FORMAT")'
  assert_output '["s3://sts-stackgraph-offsite", "https://offsite.example:9000", "json"]'
  run manifest_get '[v["secret"]["secretName"] for v in m["spec"]["template"]["spec"]["volumes"] if "secret" in v]'
  assert_output '["offsite-credentials"]'
  # the control: without -replica the same script reads the primary
  audit_mark
  run --separate-stderr "${RESTORE}/list-backups.sh" stackgraph -n sts -o json
  assert_success
  run manifest_get 'env("list", "BACKUP_STORAGE"), env("list", "S3_ENDPOINT")'
  assert_output '["s3://sts-stackgraph-backup", "http://sts-minio:9000"]'
}

@test "chart: restore-stackgraph-backup.sh NAME -replica -force restores from the copy, orchestrated" {
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh" -n sts -replica sts-backup-20240101-0300.graph -force
  assert_success
  [[ ${stderr} == *'Restored StackGraph backup sts-backup-20240101-0300.graph (off-site copy).'* ]] \
    || fail "no restored line in: ${stderr}"
  refute_workload_calls
  assert_job restore stackgraph-restore
  run manifest_get 'env("restore", "BACKUP_STORAGE"), env("restore", "BACKUP_NAME"), env("restore", "RESTORE_FORCE")'
  assert_output '["s3://sts-stackgraph-offsite", "sts-backup-20240101-0300.graph", "true"]'
  run manifest_get 'env("restore", "STS_ORCHESTRATE"), env("restore", "STS_SCALE_DOWN_SELECTOR")'
  assert_output '["true", "stackstate.com/connects-to-stackgraph=true"]'
}

@test "chart: -replica for a store without an off-site copy names the value to set; nothing is created" {
  run --separate-stderr "${RESTORE}/list-backups.sh" configuration -replica -n sts
  assert_failure 1
  [[ ${stderr} == *'has no job-configuration-list-replica.json: set backup.configuration.replicate.enabled=true'* ]] \
    || fail "unexpected message: ${stderr}"
  refute_api '^create jobs'
  run --separate-stderr "${RESTORE}/restore-stackgraph-backup.sh" -n sts --finalize -replica
  assert_failure 2
  [[ ${stderr} == *'--finalize takes none of -force, --latest, --background, -replica'* ]] || fail "${stderr}"
  refute_api '^create jobs'
}
