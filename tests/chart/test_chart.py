"""Render tests of chart/: helm lint, assertions on the rendered objects, every `fail` path,
strict schema validation for Kubernetes 1.28-1.34, and the rclone engine run for real.

Run through tests/chart/run.sh (puts helm, kubernetes-validate and rclone on PATH).
Prints one line per test and ends with `chart: N passed, M failed`; exits 1 on any failure.
Arguments select tests by a part of their name (the kubernetes-validate tests then only see what
the selected tests rendered).
"""

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

from chartlib import (AZURITE_ACCOUNT, AZURITE_KEY, CHART, ROOT, STORAGE_CONTAINER, Rendered, container, env_of,
                      free_port, helm_args, mounts_of, pod_spec, resolve_env, s3_call, secret_data, volumes_of,
                      wait_port)
from chartlib import start_storage as _start_storage
from apiserver_stub import ApiServerStub

EXAMPLES = sorted((CHART / "examples").glob("*.yaml"))
K8S_VERSIONS = ["1.28.0", "1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0"]
TAG = {"backup.enabled": "true", "backup.stackGraph.image.tag": "5.1.0"}
WORK = Path(tempfile.mkdtemp(prefix="sts-chart-tests."))
RENDERED = WORK / "rendered"  # every rendered manifest lands here for kubernetes-validate
RENDERED.mkdir()

TESTS = []
SKIP_SCHEMA = ["--skip-schema-validation"]


def test(fn):
    TESTS.append(fn)
    return fn


# ------------------------------------------------------------------------------------------
# helpers






def keep_for_validation(name, obj):
    """Saves one object for kubernetes-validate; identical objects are validated once."""
    text = json.dumps(obj, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    (RENDERED / f"{name}-{digest}.json").write_text(text)


def start_storage(rendered, data_dir, port):
    return _start_storage(rendered, data_dir, port, WORK)


def render(values=(), sets=None, release="rel", extra=(), keep=True):
    proc = subprocess.run(helm_args(values, sets, release, extra), capture_output=True, text=True)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    if keep:
        for d in docs:
            keep_for_validation(d["kind"].lower(), d)
        save_job_templates(Rendered(docs))
    return Rendered(docs)


def render_fails(expected, values=(), sets=None, extra=()):
    """helm must exit non-zero and stderr must contain `expected` (a string)."""
    proc = subprocess.run(helm_args(values, sets, extra=extra), capture_output=True, text=True)
    assert proc.returncode != 0, f"helm template succeeded but should fail with {expected!r}"
    assert expected in proc.stderr, f"expected {expected!r} in:\n{proc.stderr}"
    return proc.stderr


PLACEHOLDER_VALUES = {
    "__JOB_NAME__": "restore-20260101t000000",
    "__BACKUP_NAME__": "sts-backup-20260101-0300.graph",
    "__FORCE__": "false",
    "__LATEST__": "false",
    "__SNAPSHOT_NAME__": "sts-backup-20260101-0300-abc",
    "__INDICES__": "",
    "__OUTPUT_FORMAT__": "json",
}


def fill_placeholders(obj):
    if isinstance(obj, dict):
        return {k: fill_placeholders(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [fill_placeholders(v) for v in obj]
    if isinstance(obj, str) and obj in PLACEHOLDER_VALUES:
        return PLACEHOLDER_VALUES[obj]
    return obj


def save_job_templates(rendered):
    """Keeps the JSON Jobs of the ConfigMap, raw and as the restore script fills them, for validation."""
    for cm in rendered.all("ConfigMap"):
        if cm["metadata"]["labels"].get("app.kubernetes.io/component") != "job-templates":
            continue  # e.g. the monitor's config.json
        for key, text in cm.get("data", {}).items():
            if key.endswith(".json"):
                job = json.loads(text)
                keep_for_validation("template-" + key[:-5], job)
                keep_for_validation("filled-" + key[:-5], fill_placeholders(job))














def assert_hardened(obj, pod_context_expected=True):
    spec = pod_spec(obj)
    # Only the orchestrated StackGraph runs get a token, and only for the chart's own
    # least-privilege ServiceAccount (templates/rbac-orchestrate.yaml).
    if spec.get("serviceAccountName", "").endswith("-orchestrate"):
        assert spec.get("automountServiceAccountToken") is True
    else:
        assert spec.get("automountServiceAccountToken") is False
        assert "serviceAccountName" not in spec
    if pod_context_expected:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, psc
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, psc
    for c in spec["containers"] + spec.get("initContainers", []):
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"]["drop"] == ["ALL"], c["name"]
        assert mounts_of(c).get("tmp", {}).get("mountPath") == "/tmp" or c["name"] == "copy-binary", c["name"]
        assert "resources" in c, c["name"]


def helm_notes(sets=None, values=()):
    """NOTES.txt as Helm renders it (helm template does not print notes; render a copy through tpl)."""
    copy = WORK / "notes-chart"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(CHART, copy)
    shutil.copy(CHART / "templates" / "NOTES.txt", copy / "notes-copy.txt")
    (copy / "templates" / "zz-notes.yaml").write_text('notes: {{ tpl (.Files.Get "notes-copy.txt") . | toJson }}\n')
    args = helm_args(values, sets)
    args[3] = str(copy)
    proc = subprocess.run(args + ["--show-only", "templates/zz-notes.yaml"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)["notes"]


def set_(**kw):
    out = dict(TAG)
    out.update({k.replace("__", "."): v for k, v in kw.items()})
    return out


# ------------------------------------------------------------------------------------------
# lint, docs, schema


@test
def lint_examples():
    assert len(EXAMPLES) >= 7, EXAMPLES
    for f in EXAMPLES + [None]:
        args = ["helm", "lint", "--strict", str(CHART)] + (["-f", str(f)] if f else [])
        proc = subprocess.run(args, capture_output=True, text=True)
        assert proc.returncode == 0, f"helm lint --strict {f}:\n{proc.stdout}{proc.stderr}"
        if f:
            assert render(values=[f]).docs, f  # kept for the kubernetes-validate tests


@test
def readme_values_table_is_current_and_every_value_documented():
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("readme.py")), "check", str(CHART)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@test
def readme_check_catches_an_undocumented_value():
    sys.dont_write_bytecode = True  # no __pycache__ in the checkout
    sys.path.insert(0, str(Path(__file__).parent))
    import readme  # noqa: E402

    _, problems = readme.documented_rows("# -- a\na:\n  # -- b\n  b: 1\n  c: 2\n")
    assert problems == ["a.c"], problems
    _, problems = readme.documented_rows("# -- a whole\na:\n  b: 1\n  c: 2\n")
    assert problems == [], problems


@test
def schema_knows_every_value():
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = []

    def walk(node, sch, path):
        if not isinstance(node, dict) or sch.get("additionalProperties", True) is not False:
            return
        for key, child in node.items():
            prop = sch.get("properties", {}).get(key)
            if prop is None:
                missing.append(path + key)
                continue
            if "$ref" in prop:
                prop = schema["definitions"][prop["$ref"].rsplit("/", 1)[1]]
            walk(child, prop, path + key + ".")

    for key, child in values.items():
        prop = schema["properties"].get(key)
        if prop is None:
            missing.append(key)
            continue
        if "$ref" in prop:
            prop = schema["definitions"][prop["$ref"].rsplit("/", 1)[1]]
        walk(child, prop, key + ".")
    assert not missing, f"values without a schema: {missing}"


@test
def schema_refuses_unknown_nested_keys():
    render_fails("additional properties 'bukcetName' not allowed", sets=set_(backup__stackGraph__bukcetName="x"))
    render_fails("engine", sets=set_(minio__engine="seaweed"))


# ------------------------------------------------------------------------------------------
# what renders


@test
def disabled_renders_nothing():
    assert render().docs == []
    assert render(sets={"backup.enabled": "false", "minio.s3gateway.enabled": "true",
                        "minio.azuregateway.enabled": "true"}).docs == []
    assert "nothing was deployed" in helm_notes()


@test
def local_mode_renders_the_full_set():
    r = render(sets=set_())
    assert r.kinds() == sorted(["Secret", "ConfigMap", "PersistentVolumeClaim", "Service", "Deployment",
                                "CronJob", "CronJob", "CronJob", "Job", "Pod",
                                # the configuration store (StackState 5.1 backup.configuration)
                                "CronJob", "CronJob",
                                # the backup monitor
                                "ConfigMap", "Deployment", "Service",
                                # the orchestrated restore and backup Jobs' RBAC
                                "ServiceAccount", "Role", "RoleBinding"]), r.kinds()
    names = {(d["kind"], d["metadata"]["name"]) for d in r.docs}
    assert ("Service", "rel-minio") in names and ("Deployment", "rel-minio") in names
    assert ("Secret", "rel-minio") in names and ("PersistentVolumeClaim", "rel-minio") in names
    assert ("CronJob", "rel-sts-backup-stackgraph-backup") in names
    assert ("CronJob", "rel-sts-backup-stackgraph-retention") in names
    assert ("CronJob", "rel-sts-backup-configuration-backup") in names
    assert ("CronJob", "rel-sts-backup-configuration-retention") in names
    assert ("CronJob", "rel-sts-backup-es-register") in names
    assert ("Job", "rel-sts-backup-es-register") in names
    for d in r.docs:
        labels = d["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                    "app.kubernetes.io/managed-by", "app.kubernetes.io/component", "helm.sh/chart"):
            assert key in labels, (d["kind"], d["metadata"]["name"], key)
        assert labels["app.kubernetes.io/instance"] == "rel"
    svc = r.one("Service", "minio")
    assert svc["spec"]["ports"] == [{"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}]
    dep = r.one("Deployment", "minio")
    sel = svc["spec"]["selector"]
    assert sel == dep["spec"]["selector"]["matchLabels"]
    assert all(dep["spec"]["template"]["metadata"]["labels"][k] == v for k, v in sel.items())
    assert sel["app.kubernetes.io/component"] == "minio"


@test
def stackgraph_backup_cronjob():
    r = render(sets=set_())
    cj = r.one("CronJob", "stackgraph-backup")
    spec = cj["spec"]
    assert spec["schedule"] == "0 3 * * *"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 1
    assert "timeZone" not in spec
    ps = pod_spec(cj)
    assert ps["restartPolicy"] == "Never"
    (init,) = ps["initContainers"]
    assert init["image"] == "sts-backup/jobs:0.1.0"
    assert init["command"] == ["/usr/local/bin/stackgraph-backup"] and init["args"] == ["copy-to", "/sts-backup/bin"]
    main = container(cj)
    assert main["name"] == "backup"
    assert main["image"] == "quay.io/stackstate/stackstate-server:5.1.0"
    assert main["command"] == ["/sts-backup/bin/stackgraph-backup"]
    assert main["args"] == ["backup", "--", "/opt/docker/bin/stackstate-server", "-export", "{file}"]
    env = env_of(main)
    assert env["BACKUP_STORAGE"] == "s3://sts-stackgraph-backup"
    assert env["S3_ENDPOINT"] == "http://rel-minio:9000"
    assert env["S3_CREDENTIALS_DIR"] == "/etc/sts-backup/s3"
    assert env["S3_ADDRESSING"] == "path"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE"] == "sts-backup-%Y%m%d-%H%M.graph"
    assert env["BACKUP_CREATE_BUCKET"] == "true"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_PARSE_REGEXP"] == "sts-backup-([0-9]*-[0-9]*).graph"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_DATETIME_PARSE_FORMAT"] == "%Y%m%d-%H%M"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA"] == "days = 30"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_MIN_KEEP"] == "1"
    assert env["BACKUP_SCRATCH_DIR"] == "/scratch"
    assert not any(k.startswith("BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_") for k in env), env
    assert "BACKUP_COMPRESS" not in env
    vols = volumes_of(cj)
    assert vols["s3-credentials"]["secret"]["secretName"] == "rel-minio"
    assert [i["key"] for i in vols["s3-credentials"]["secret"]["items"]] == ["accesskey", "secretkey"]
    assert vols["scratch"] == {"name": "scratch", "emptyDir": {}}
    assert "emptyDir" in vols["sts-backup-bin"]
    mounts = mounts_of(main)
    assert mounts["s3-credentials"]["mountPath"] == "/etc/sts-backup/s3" and mounts["s3-credentials"]["readOnly"]
    assert mounts["scratch"]["mountPath"] == "/scratch"
    assert mounts["sts-backup-bin"]["mountPath"] == "/sts-backup/bin"
    assert mounts_of(init)["sts-backup-bin"]["mountPath"] == "/sts-backup/bin"
    assert_hardened(cj)
    assert ps["securityContext"]["runAsUser"] == 65534  # StackState 5.1 backup.stackGraph.securityContext
    assert "enabled" not in ps["securityContext"]


@test
def stackgraph_backup_options():
    r = render(sets=set_(backup__stackGraph__exportCommand="{/usr/bin/dump-graph,--stdout}",
                         backup__stackGraph__compress="zstd",
                         backup__stackGraph__s3Prefix="cluster-a/graph",
                         backup__stackGraph__scheduled__timeZone="Europe/Amsterdam",
                         backup__stackGraph__scheduled__backupRetentionKeep__weekly="4",
                         backup__stackGraph__scheduled__backupRetentionKeep__last="0",
                         backup__stackGraph__scheduled__activeDeadlineSeconds="7200",
                         backup__stackGraph__image__digest="sha256:" + "a" * 64))
    cj = r.one("CronJob", "stackgraph-backup")
    main = container(cj)
    assert main["args"] == ["backup", "--", "/usr/bin/dump-graph", "--stdout"]
    assert main["image"] == "quay.io/stackstate/stackstate-server:5.1.0@sha256:" + "a" * 64
    env = env_of(main)
    assert "BACKUP_SCRATCH_DIR" not in env and "scratch" not in volumes_of(cj) and "scratch" not in mounts_of(main)
    assert env["BACKUP_COMPRESS"] == "zstd"
    assert env["BACKUP_STORAGE"] == "s3://sts-stackgraph-backup/cluster-a/graph"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_WEEKLY"] == "4"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_LAST"] == "0"
    assert "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_DAILY" not in env
    assert cj["spec"]["timeZone"] == "Europe/Amsterdam"
    assert cj["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 7200
    retention = r.one("CronJob", "stackgraph-retention")
    assert retention["spec"]["timeZone"] == "Europe/Amsterdam"
    assert env_of(container(retention))["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_WEEKLY"] == "4"


@test
def stackgraph_scratch_as_ephemeral_pvc_and_extras():
    r = render(sets=set_(backup__stackGraph__scratch__ephemeralVolume__size="80Gi",
                         backup__stackGraph__scratch__ephemeralVolume__storageClassName="fast",
                         **{"backup__stackGraph__extraEnv[0]__name": "ZOOKEEPER_QUORUM",
                            "backup__stackGraph__extraEnv[0]__value": "zk:2181"}))
    cj = r.one("CronJob", "stackgraph-backup")
    claim = volumes_of(cj)["scratch"]["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim["resources"]["requests"]["storage"] == "80Gi" and claim["storageClassName"] == "fast"
    assert env_of(container(cj))["ZOOKEEPER_QUORUM"] == "zk:2181"
    restore = r.job_templates()["job-stackgraph-restore.json"]
    assert env_of(container(restore))["ZOOKEEPER_QUORUM"] == "zk:2181"
    r = render(sets=set_(backup__stackGraph__scratch__sizeLimit="20Gi"))
    assert volumes_of(r.one("CronJob", "stackgraph-backup"))["scratch"]["emptyDir"] == {"sizeLimit": "20Gi"}


@test
def stackstate_name_template_is_translated_not_shell_evaluated():
    r = render(sets=set_(backup__stackGraph__scheduled__backupNameTemplate="graph-$(date +%Y-%m-%dT%H%M).bak"))
    env = env_of(container(r.one("CronJob", "stackgraph-backup")))
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE"] == "graph-%Y-%m-%dT%H%M.bak"
    r = render(sets=set_(backup__stackGraph__scheduled__backupNameTemplate="plain-%Y%m%d.graph"))
    env = env_of(container(r.one("CronJob", "stackgraph-backup")))
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE"] == "plain-%Y%m%d.graph"


NAME_TEMPLATES = Path(__file__).resolve().parent / "name_templates.tsv"


def name_template_rows():
    rows = []
    for line in NAME_TEMPLATES.read_text().splitlines():
        if line and not line.startswith("#"):
            verdict, template = line.split("\t", 1)
            assert verdict in ("accept", "refuse"), line
            rows.append((verdict, template))
    return rows


def binary_verdict(template):
    """What `stackgraph-backup backup --name-template` says of a template: accept (exit 0) or refuse (exit 2)."""
    store = Path(tempfile.mkdtemp(dir=WORK, prefix="names."))
    proc = subprocess.run([str(ROOT / "target" / "debug" / "stackgraph-backup"), "backup", "--storage", f"file://{store}",
                           "--name-template", template, "--", "sh", "-c", "printf x"],
                          env={"PATH": os.environ["PATH"], "HOME": str(WORK)}, capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 2), (template, proc.returncode, proc.stderr)
    return "accept" if proc.returncode == 0 else "refuse"


def chart_verdict(template):
    values = WORK / "name-template.yaml"
    values.write_text(yaml.safe_dump({"backup": {"stackGraph": {"scheduled": {"backupNameTemplate": template}}}}))
    proc = subprocess.run(helm_args(values=[values], sets=set_()), capture_output=True, text=True)
    if proc.returncode == 0:
        return "accept"
    assert "backup.stackGraph.scheduled.backupNameTemplate" in proc.stderr or "backupNameTemplate" in proc.stderr, \
        (template, proc.stderr)
    return "refuse"


@test
def chart_and_binary_judge_name_templates_alike():
    """One table (tests/chart/name_templates.tsv): the chart's render and the binary must both give its verdict."""
    rows = name_template_rows()
    assert len(rows) >= 30 and {v for v, _ in rows} == {"accept", "refuse"}
    wrong = []
    for verdict, template in rows:
        got = (chart_verdict(template), binary_verdict(template))
        if got != (verdict, verdict):
            wrong.append(f"{template!r}: table {verdict}, chart {got[0]}, binary {got[1]}")
    assert not wrong, "\n".join(wrong)


@test
def retention_cronjob_uses_the_same_retention_values():
    r = render(sets=set_(backup__stackGraph__scheduled__backupRetentionTimeDelta="days = 7",
                         backup__stackGraph__scheduled__backupRetentionMinKeep="3",
                         backup__stackGraph__scheduled__retentionJob__dryRun="true"))
    cj = r.one("CronJob", "stackgraph-retention")
    assert cj["spec"]["schedule"] == "30 4 * * *" and cj["spec"]["concurrencyPolicy"] == "Forbid"
    c = container(cj)
    assert c["name"] == "prune" and c["image"] == "sts-backup/jobs:0.1.0"
    assert c["command"] == ["/usr/local/bin/retention-pruner"] and "args" not in c
    env = env_of(c)
    backup_env = env_of(container(r.one("CronJob", "stackgraph-backup")))
    shared = [k for k in backup_env if k.startswith(("BACKUP_STACKGRAPH_SCHEDULED_BACKUP_", "S3_", "BACKUP_STORAGE",
                                                     "BACKUP_ABORT"))
              and k != "BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE"]
    assert len(shared) >= 9
    for k in shared:
        assert env[k] == backup_env[k], k
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA"] == "days = 7"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_MIN_KEEP"] == "3"
    assert env["BACKUP_PRUNE_DRY_RUN"] == "true"
    assert volumes_of(cj)["s3-credentials"] == volumes_of(r.one("CronJob", "stackgraph-backup"))["s3-credentials"]
    assert_hardened(cj)
    assert pod_spec(cj)["securityContext"]["runAsUser"] == 65532
    r = render(sets=set_(backup__stackGraph__scheduled__retentionJob__enabled="false"))
    r.none("CronJob", "stackgraph-retention")
    r.one("CronJob", "stackgraph-backup")


@test
def registration_hook_and_suspended_twin():
    r = render(sets=set_())
    job = r.one("Job", "es-register")
    ann = job["metadata"]["annotations"]
    assert ann["helm.sh/hook"] == "post-install,post-upgrade"
    assert "before-hook-creation" in ann["helm.sh/hook-delete-policy"]
    assert job["spec"]["backoffLimit"] == 3 and job["spec"]["activeDeadlineSeconds"] == 600
    c = container(job)
    assert c["command"] == ["/usr/local/bin/es-snapshot-register"] and c["args"] == ["register"]
    env = env_of(c)
    assert env["ES_CREATE_BUCKET"] == "true" and env["ES_NO_POLICY"] == "false"
    assert env["ELASTICSEARCH_ENDPOINT"] == "http://stackstate-elasticsearch-master-headless:9200"
    assert env["BACKUP_ELASTICSEARCH_BUCKET_NAME"] == "sts-elasticsearch-backup"
    assert env["BACKUP_ELASTICSEARCH_SNAPSHOT_REPOSITORY_NAME"] == "sts-backup"
    assert env["BACKUP_ELASTICSEARCH_SCHEDULED_SCHEDULE"] == "0 0 3 * * ?"
    assert env["BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_NAME_TEMPLATE"] == "<sts-backup-{now{yyyyMMdd-HHmm}}>"
    assert env["BACKUP_ELASTICSEARCH_SCHEDULED_INDICES"] == "sts*"
    assert env["BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_POLICY_NAME"] == "auto-sts-backup"
    assert env["BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_EXPIRE_AFTER"] == "30d"
    assert env["BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MIN_COUNT"] == "5"
    assert env["BACKUP_ELASTICSEARCH_SCHEDULED_SNAPSHOT_RETENTION_MAX_COUNT"] == "30"
    assert env["S3_ENDPOINT"] == "http://rel-minio:9000" and env["ES_S3_CREDENTIALS"] == "inline"
    assert_hardened(job)
    twin = r.one("CronJob", "es-register")
    assert twin["spec"]["schedule"] == "0 0 31 2 *" and twin["spec"]["suspend"] is True
    assert twin["spec"]["jobTemplate"]["spec"]["template"] == job["spec"]["template"]
    # restore only: repository without policy, no bucket creation
    r = render(sets=set_(backup__elasticsearch__scheduled__enabled="false"))
    env = env_of(container(r.one("Job", "es-register")))
    assert env["ES_CREATE_BUCKET"] == "false" and env["ES_NO_POLICY"] == "true"
    assert "BACKUP_ELASTICSEARCH_SCHEDULED_SCHEDULE" not in env
    # neither: nothing for Elasticsearch
    r = render(sets=set_(backup__elasticsearch__scheduled__enabled="false",
                         backup__elasticsearch__restore__enabled="false"))
    r.none("Job")
    r.none("CronJob", "es-register")


@test
def elasticsearch_auth_and_ca():
    r = render(sets=set_(backup__elasticsearch__auth__username="elastic",
                         backup__elasticsearch__auth__existingSecret="es-creds",
                         backup__elasticsearch__tls__caSecret="es-ca",
                         backup__elasticsearch__endpoint="https://es:9200"))
    for obj in [r.one("Job", "es-register")] + [r.job_templates()[k] for k in
                                                 ("job-elasticsearch-list.json", "job-elasticsearch-restore.json")]:
        c = container(obj)
        env = env_of(c)
        assert env["ES_USERNAME"] == "elastic" and env["ES_PASSWORD_FILE"] == "/etc/sts-backup/es-auth/password"
        assert env["ES_CA_BUNDLE"] == "/etc/sts-backup/es-ca/ca.crt"
        assert volumes_of(obj)["es-auth"]["secret"]["secretName"] == "es-creds"
        assert mounts_of(c)["es-ca"]["mountPath"] == "/etc/sts-backup/es-ca"
    r = render(sets=set_(backup__elasticsearch__auth__existingSecret="es-key"))
    env = env_of(container(r.one("Job", "es-register")))
    assert env["ES_API_KEY_FILE"] == "/etc/sts-backup/es-auth/apiKey" and "ES_USERNAME" not in env


@test
def orchestrate_rbac_is_least_privilege_and_only_on_the_orchestrated_pods():
    r = render(sets=set_())
    sa = r.one("ServiceAccount", "orchestrate")
    name = sa["metadata"]["name"]
    assert sa["automountServiceAccountToken"] is False
    role = r.one("Role", "orchestrate")
    rules = {(tuple(x["apiGroups"]), tuple(x["resources"])): sorted(x["verbs"]) for x in role["rules"]}
    assert rules == {
        (("apps",), ("deployments", "statefulsets")):
            ["get", "list", "patch", "watch"],
        (("",), ("pods",)): ["list", "watch"],
        (("coordination.k8s.io",), ("leases",)): ["create", "get", "update"],
        (("",), ("events",)): ["create"],
        (("batch",), ("jobs",)): ["get"],
    }, rules
    assert all("*" not in x["verbs"] and "*" not in x["resources"] for x in role["rules"])
    assert not r.all("ClusterRole") and not r.all("ClusterRoleBinding")
    rb = r.one("RoleBinding", "orchestrate")
    assert rb["roleRef"]["name"] == name and rb["subjects"][0]["name"] == name
    restore = r.job_templates()["job-stackgraph-restore.json"]
    backup = r.one("CronJob", "stackgraph-backup")
    for obj in (restore, backup):
        spec = pod_spec(obj)
        assert spec["serviceAccountName"] == name and spec["automountServiceAccountToken"] is True
        env = env_of(container(obj))
        assert env["STS_ORCHESTRATE"] == "true" and env["STS_STORE"] == "stackgraph"
        (c,) = spec["containers"]
        src = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c["env"]}
        assert src["POD_NAME"] == "metadata.name" and src["POD_NAMESPACE"] == "metadata.namespace"
        assert src["JOB_NAME"] == "metadata.labels['job-name']"
    assert env_of(container(restore))["STS_SCALE_DOWN_SELECTOR"] == "stackstate.com/connects-to-stackgraph=true"
    # --finalize: the jobs image runs `stackgraph-backup finalize` as the same ServiceAccount
    fin = r.job_templates()["job-stackgraph-finalize.json"]
    assert fin["metadata"]["name"] == "__JOB_NAME__" and fin["spec"]["backoffLimit"] == 0
    assert container(fin)["command"] == ["/usr/local/bin/stackgraph-backup"] and container(fin)["args"] == ["finalize"]
    assert pod_spec(fin)["serviceAccountName"] == name and pod_spec(fin)["automountServiceAccountToken"] is True
    assert env_of(container(fin))["STS_STORE"] == "stackgraph" and "STS_SCALE_DOWN_SELECTOR" not in env_of(container(fin))
    assert_hardened(fin)
    assert "STS_SCALE_DOWN_SELECTOR" not in env_of(container(backup))
    for key in ("job-stackgraph-list.json", "job-elasticsearch-list.json"):
        assert "serviceAccountName" not in pod_spec(r.job_templates()[key]), key
    # the Elasticsearch restore locks its own store and scales its own writers
    es = r.job_templates()["job-elasticsearch-restore.json"]
    assert pod_spec(es)["serviceAccountName"] == name and pod_spec(es)["automountServiceAccountToken"] is True
    es_env = env_of(container(es))
    assert es_env["STS_ORCHESTRATE"] == "true" and es_env["STS_STORE"] == "elasticsearch"
    assert es_env["STS_SCALE_DOWN_SELECTOR"] == "observability.suse.com/scalable-during-es-restore=true"
    sg_off = render(sets=set_(backup__stackGraph__orchestrate__enabled="false"))
    assert sg_off.all("Role") and "STS_ORCHESTRATE" not in env_of(container(sg_off.job_templates()["job-stackgraph-restore.json"]))
    config_on = render(sets=set_(backup__stackGraph__orchestrate__enabled="false",
                                 backup__elasticsearch__restore__orchestrate="false"))
    assert config_on.all("Role"), "the configuration store still runs orchestrated"
    off = render(sets=set_(backup__stackGraph__orchestrate__enabled="false",
                           backup__configuration__orchestrate__enabled="false",
                           backup__elasticsearch__restore__orchestrate="false"))
    assert not off.all("Role") and not off.all("ServiceAccount")
    assert "job-stackgraph-finalize.json" not in off.job_templates()
    assert "serviceAccountName" not in pod_spec(off.job_templates()["job-elasticsearch-restore.json"])
    assert pod_spec(off.one("CronJob", "stackgraph-backup"))["automountServiceAccountToken"] is False


@test
def job_templates_configmap():
    r = render(sets=set_())
    cm = r.one("ConfigMap", "job-templates")
    assert cm["metadata"]["labels"]["sts-backup.io/job-templates"] == "true"
    t = r.job_templates()
    assert sorted(t) == sorted(["job-stackgraph-list.json", "job-stackgraph-restore.json",
                                "job-elasticsearch-list.json", "job-elasticsearch-restore.json",
                                "job-stackgraph-finalize.json",
                                "job-configuration-list.json", "job-configuration-restore.json",
                                "job-configuration-finalize.json", "configuration-scale-down-selector",
                                "stackgraph-scale-down-selector", "elasticsearch-scale-down-selector", "stores"])
    assert t["stores"] == "stackgraph configuration"
    assert t["stackgraph-scale-down-selector"] == "stackstate.com/connects-to-stackgraph=true"
    assert t["elasticsearch-scale-down-selector"] == "observability.suse.com/scalable-during-es-restore=true"
    backup_cj = r.one("CronJob", "stackgraph-backup")
    backup_env = env_of(container(backup_cj))
    expected = {
        "job-stackgraph-list.json": ("list", {"OUTPUT_FORMAT": "__OUTPUT_FORMAT__"}),
        "job-stackgraph-restore.json": ("restore", {"BACKUP_NAME": "__BACKUP_NAME__", "RESTORE_FORCE": "__FORCE__",
                                                    "RESTORE_LATEST": "__LATEST__"}),
        "job-elasticsearch-list.json": ("list", {"OUTPUT_FORMAT": "__OUTPUT_FORMAT__"}),
        "job-elasticsearch-restore.json": ("restore", {"SNAPSHOT_NAME": "__SNAPSHOT_NAME__",
                                                       "INDICES_TO_RESTORE": "__INDICES__"}),
    }
    for key, (cname, placeholders) in expected.items():
        job = t[key]
        assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job", key
        assert job["metadata"]["name"] == "__JOB_NAME__", key
        assert job["spec"]["backoffLimit"] == 0, key
        assert "ttlSecondsAfterFinished" not in job["spec"], key
        assert pod_spec(job)["restartPolicy"] == "Never", key
        (c,) = pod_spec(job)["containers"]
        assert c["name"] == cname, key
        env = env_of(c)
        for name, value in placeholders.items():
            assert env[name] == value, (key, name)
        for name in ("S3_ENDPOINT", "S3_CREDENTIALS_DIR", "S3_REGION", "LOG_FORMAT"):
            assert env[name] == backup_env[name], (key, name)
        assert volumes_of(job)["s3-credentials"] == volumes_of(backup_cj)["s3-credentials"], key
        assert_hardened(job)
    sg_list = t["job-stackgraph-list.json"]
    assert container(sg_list)["command"] == ["/usr/local/bin/stackgraph-backup"]
    assert container(sg_list)["args"] == ["list"]
    assert env_of(container(sg_list))["BACKUP_STORAGE"] == "s3://sts-stackgraph-backup"
    sg_restore = t["job-stackgraph-restore.json"]
    c = container(sg_restore)
    assert c["image"] == container(backup_cj)["image"]
    assert c["args"] == ["restore", "--", "/opt/docker/bin/stackstate-server", "-import", "{file}"]
    env = env_of(c)
    assert env["RESTORE_FORCE_ARG"] == "-force" and env["BACKUP_SCRATCH_DIR"] == "/scratch"
    assert "RESTORE_EMPTY_CHECK" not in env
    assert pod_spec(sg_restore)["initContainers"] == pod_spec(backup_cj)["initContainers"]
    assert pod_spec(sg_restore)["securityContext"] == pod_spec(backup_cj)["securityContext"]
    es_restore = t["job-elasticsearch-restore.json"]
    assert container(es_restore)["args"] == ["restore"]
    assert env_of(container(es_restore))["BACKUP_ELASTICSEARCH_SCHEDULED_INDICES"] == "sts*"
    assert container(t["job-elasticsearch-list.json"])["args"] == ["list"]
    # the raw text holds the placeholders as whole JSON strings
    assert '"__JOB_NAME__"' in cm["data"]["job-stackgraph-list.json"]
    assert '"__FORCE__"' in cm["data"]["job-stackgraph-restore.json"]


@test
def restore_and_scheduled_switch_independently():
    cases = {
        ("true", "true", "true", "true"): ["es-register", "stackgraph-backup", "stackgraph-retention", "sg", "es"],
        ("false", "true", "true", "true"): ["es-register", "stackgraph-backup", "stackgraph-retention", "es"],
        ("true", "false", "true", "true"): ["es-register", "sg", "es"],
        ("true", "true", "false", "true"): ["es-register", "stackgraph-backup", "stackgraph-retention", "sg"],
        ("true", "true", "true", "false"): ["es-register", "stackgraph-backup", "stackgraph-retention", "sg", "es"],
        ("false", "false", "false", "false"): [],
    }
    for (sg_restore, sg_sched, es_restore, es_sched), want in cases.items():
        # the configuration store's switches are covered by configuration_store_switches
        r = render(sets=set_(backup__configuration__restore__enabled="false",
                             backup__configuration__scheduled__enabled="false",
                             backup__stackGraph__restore__enabled=sg_restore,
                             backup__stackGraph__scheduled__enabled=sg_sched,
                             backup__elasticsearch__restore__enabled=es_restore,
                             backup__elasticsearch__scheduled__enabled=es_sched))
        got = sorted(c["metadata"]["labels"]["app.kubernetes.io/component"] for c in r.all("CronJob"))
        if "es-register" in want:
            r.one("Job", "es-register")
        else:
            r.none("Job")
        keys = set()
        if any(c["metadata"]["labels"].get("app.kubernetes.io/component") == "job-templates" for c in r.all("ConfigMap")):
            keys = set(r.job_templates())
        parts = []
        if "job-stackgraph-restore.json" in keys:
            parts.append("sg")
        if "job-elasticsearch-restore.json" in keys:
            parts.append("es")
        assert sorted(got + parts) == sorted(want), ((sg_restore, sg_sched, es_restore, es_sched), got, parts)
        r.one("Deployment", "minio")  # the storage service is always there when backup.enabled


@test
def every_stackgraph_job_has_a_deadline_that_fits_the_backup_size():
    def deadlines(**sets):
        r = render(sets=set_(**sets))
        spec = lambda cj: r.one("CronJob", cj)["spec"]["jobTemplate"]["spec"]  # noqa: E731
        restore = r.job_templates()["job-stackgraph-restore.json"]["spec"]
        return (spec("stackgraph-backup").get("activeDeadlineSeconds"), spec("stackgraph-retention").get("activeDeadlineSeconds"),
                restore.get("activeDeadlineSeconds"))
    # 1800 s + 100 GiB at 10 MiB/s
    assert deadlines() == (1800 + 102400 // 10, 1800, 1800 + 102400 // 10)
    assert deadlines(**{"backup.stackGraph.expectedSize": "2Ti", "backup.stackGraph.deadlineThroughputMiBps": "50"}) == \
        (1800 + 2 * 1048576 // 50, 1800, 1800 + 2 * 1048576 // 50)
    assert deadlines(**{"backup.stackGraph.expectedSize": "500Mi"}) == (1850, 1800, 1850)
    assert deadlines(**{"backup.stackGraph.scheduled.activeDeadlineSeconds": "600",
                        "backup.stackGraph.restore.activeDeadlineSeconds": "700",
                        "backup.stackGraph.scheduled.retentionJob.activeDeadlineSeconds": "300"}) == (600, 300, 700)
    render_fails("expectedSize", sets=set_(**{"backup.stackGraph.expectedSize": "100GB"}))
    render_fails("deadlineThroughputMiBps", sets=set_(**{"backup.stackGraph.deadlineThroughputMiBps": "0"}))


# ------------------------------------------------------------------------------------------
# storage service


KEYS = {"minio.accessKey": "Acc3ssKeyXyz", "minio.secretKey": "S3cretKeyXyzS3cretKeyXyz"}
AWS = {"minio.s3gateway.accessKey": "AKIAIOSFODNN7EXAMPLE",
       "minio.s3gateway.secretKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}


# the minio engine in a gateway mode, set knowingly: a gateway-capable release and the acknowledgement
MINIO_GATEWAY = {"minio.engine": "minio", "minio.image.tag": "RELEASE.2022-04-29T01-27-09Z",
                 "minio.acknowledgeUnmaintainedGateway": "true"}


def storage(r):
    dep = r.one("Deployment", "minio")
    c = container(dep, STORAGE_CONTAINER)
    return dep, c, env_of(c)


@test
def storage_modes_with_minio_engine():
    r = render(sets=set_(**KEYS, **{"minio.engine": "minio"}))
    dep, c, env = storage(r)
    assert c["command"] == ["minio"] and c["args"] == ["server", "/export", "--address", ":9000"]
    assert c["image"] == "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z"
    assert env["MINIO_ROOT_USER"] == {"secretKeyRef": {"name": "rel-minio", "key": "accesskey"}}
    assert env["MINIO_ROOT_PASSWORD"] == {"secretKeyRef": {"name": "rel-minio", "key": "secretkey"}}
    assert "AWS_ACCESS_KEY_ID" not in env
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    assert volumes_of(dep)["export"]["persistentVolumeClaim"]["claimName"] == "rel-minio"
    assert mounts_of(c)["export"]["mountPath"] == "/export"
    assert_hardened(dep)
    assert [x["name"] for x in pod_spec(dep)["containers"]] == ["minio"]  # no rclone cleanup next to MinIO
    pvc = r.one("PersistentVolumeClaim")
    assert pvc["metadata"]["labels"]["sts-backup.io/storage-engine"] == "minio"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "500Gi"
    assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in pvc["spec"]
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    r = render(sets=set_(**KEYS, **AWS, **MINIO_GATEWAY, **{"minio.s3gateway.enabled": "true",
                                            "minio.s3gateway.serviceEndpoint": "https://s3.example.com",
                                            "minio.s3gateway.replicas": "2"}))
    dep, c, env = storage(r)
    assert c["args"] == ["gateway", "s3", "https://s3.example.com", "--address", ":9000"]
    assert env["AWS_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "rel-minio", "key": "awsAccessKeyId",
                                                         "optional": False}}
    assert dep["spec"]["replicas"] == 2 and dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert "export" not in volumes_of(dep)
    r.none("PersistentVolumeClaim")
    assert dep["metadata"]["labels"]["sts-backup.io/storage-mode"] == "s3gateway"

    r = render(sets=set_(**MINIO_GATEWAY, **{"minio.accessKey": "account", "minio.secretKey": "a2V5+/==",
                                             "minio.azuregateway.enabled": "true"}))
    dep, c, env = storage(r)
    assert c["args"] == ["gateway", "azure", "--address", ":9000"]
    assert c["image"] == "quay.io/minio/minio:RELEASE.2022-04-29T01-27-09Z"
    assert "export" not in volumes_of(dep)
    r.none("PersistentVolumeClaim")


@test
def storage_modes_with_rclone_engine():
    r = render(sets=set_(**KEYS, **{"minio.engine": "rclone", "minio.rclone.extraArgs": "{--vfs-cache-mode,off}"}))
    dep, c, env = storage(r)
    assert c["image"] == "docker.io/rclone/rclone:1.75.2"
    assert c["command"] == ["rclone"]
    assert c["args"] == ["serve", "s3", "--addr", ":9000", "--config", "", "--cache-dir", "/tmp/rclone-cache",
                         "--vfs-cache-mode", "off", ":hasher,remote=/export:"]
    assert env["AUTH_ACCESS_KEY"] == {"secretKeyRef": {"name": "rel-minio", "key": "accesskey"}}
    assert env["AUTH_SECRET_KEY"] == {"secretKeyRef": {"name": "rel-minio", "key": "secretkey"}}
    assert env["RCLONE_AUTH_KEY"] == '"$(AUTH_ACCESS_KEY),$(AUTH_SECRET_KEY)"'
    names = [e["name"] for e in c["env"]]
    assert names.index("AUTH_ACCESS_KEY") < names.index("RCLONE_AUTH_KEY")  # $(VAR) needs it defined first
    assert not any(k.startswith(("RCLONE_S3_", "RCLONE_AZUREBLOB_")) for k in env)
    r.one("PersistentVolumeClaim")

    r = render(sets=set_(**KEYS, **AWS, **{"minio.engine": "rclone", "minio.s3gateway.enabled": "true",
                                            "minio.s3gateway.region": "eu-west-1"}))
    dep, c, env = storage(r)
    assert c["args"][-1] == ":s3:"
    assert env["RCLONE_S3_PROVIDER"] == "AWS" and env["RCLONE_S3_REGION"] == "eu-west-1"
    assert env["RCLONE_S3_ENV_AUTH"] == "true" and "RCLONE_S3_ENDPOINT" not in env
    assert env["RCLONE_S3_ACCESS_KEY_ID"]["secretKeyRef"]["key"] == "awsAccessKeyId"
    assert env["RCLONE_S3_SECRET_ACCESS_KEY"]["secretKeyRef"]["key"] == "awsSecretAccessKey"
    r.none("PersistentVolumeClaim")

    # IAM role: no AWS keys anywhere
    r = render(sets=set_(**KEYS, **{"minio.engine": "rclone", "minio.s3gateway.enabled": "true"}))
    dep, c, env = storage(r)
    assert "RCLONE_S3_ACCESS_KEY_ID" not in env and "awsAccessKeyId" not in r.one("Secret")["data"]

    r = render(sets=set_(**{"minio.engine": "rclone", "minio.azuregateway.enabled": "true",
                            "minio.accessKey": "acct", "minio.secretKey": "a2V5+/==",
                            "minio.azuregateway.serviceEndpoint": "http://azurite:10000/acct"}))
    dep, c, env = storage(r)
    assert c["args"][-1] == ":azureblob:"
    assert env["RCLONE_AZUREBLOB_ACCOUNT"] == {"secretKeyRef": {"name": "rel-minio", "key": "accesskey"}}
    assert env["RCLONE_AZUREBLOB_KEY"] == {"secretKeyRef": {"name": "rel-minio", "key": "secretkey"}}
    assert env["RCLONE_AZUREBLOB_ENDPOINT"] == "http://azurite:10000/acct"


@test
def gateway_precedence():
    r = render(sets=set_(**KEYS, **{"minio.s3gateway.enabled": "true", "minio.persistence.enabled": "false"}))
    assert r.one("Deployment", "minio")["metadata"]["labels"]["sts-backup.io/storage-mode"] == "s3gateway"
    r = render(sets=set_(**{"minio.azuregateway.enabled": "true", "minio.persistence.enabled": "true",
                            "minio.accessKey": "acct", "minio.secretKey": "key"}))
    assert r.one("Deployment", "minio")["metadata"]["labels"]["sts-backup.io/storage-mode"] == "azuregateway"
    r.none("PersistentVolumeClaim")


@test
def credentials_never_leave_the_secret():
    for engine in ({"minio.engine": "rclone"}, MINIO_GATEWAY):
        for mode in ({}, {"minio.s3gateway.enabled": "true"}):
            r = render(sets=set_(**KEYS, **AWS, **mode, **engine))
            data = secret_data(r)
            assert data["accesskey"] == KEYS["minio.accessKey"] and data["secretkey"] == KEYS["minio.secretKey"]
            assert data["awsAccessKeyId"] == AWS["minio.s3gateway.accessKey"]
            assert data["awsSecretAccessKey"] == AWS["minio.s3gateway.secretKey"]
            for d in r.docs:
                if d["kind"] == "Secret":
                    continue
                text = json.dumps(d)
                for secret in list(KEYS.values()) + list(AWS.values()):
                    for form in (secret, base64.b64encode(secret.encode()).decode()):
                        assert form not in text, (engine, mode, d["kind"], d["metadata"]["name"])


@test
def generated_credentials_and_existing_secret():
    r = render(sets=set_())
    data = secret_data(r)
    assert re.fullmatch(r"[A-Za-z0-9]{20}", data["accesskey"]), data
    assert re.fullmatch(r"[A-Za-z0-9]{40}", data["secretkey"]), data
    assert set(data) == {"accesskey", "secretkey"}
    r = render(sets=set_(**MINIO_GATEWAY, **{"minio.existingSecret": "my-keys", "minio.s3gateway.enabled": "true"}))
    r.none("Secret")
    _, c, env = storage(r)
    assert env["MINIO_ROOT_USER"]["secretKeyRef"]["name"] == "my-keys"
    assert env["AWS_ACCESS_KEY_ID"]["secretKeyRef"] == {"name": "my-keys", "key": "awsAccessKeyId", "optional": True}
    for cj in r.all("CronJob"):
        assert volumes_of(cj)["s3-credentials"]["secret"]["secretName"] == "my-keys"
    assert env_of(container(r.one("Pod")))["RCLONE_S3_ACCESS_KEY_ID"]["secretKeyRef"]["name"] == "my-keys"
    # existingSecret skips the format checks (the keys are not in the values)
    render(sets=set_(**{"minio.existingSecret": "my-keys", "minio.accessKey": "x"}))


@test
def pvc_options():
    r = render(sets=set_(**{"minio.persistence.storageClass": "-", "minio.persistence.size": "10Gi",
                            "minio.persistence.keep": "false"}))
    pvc = r.one("PersistentVolumeClaim")
    assert pvc["spec"]["storageClassName"] == "" and pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert "annotations" not in pvc["metadata"]
    r = render(sets=set_(**{"minio.persistence.existingClaim": "old-backups"}))
    r.none("PersistentVolumeClaim")
    assert volumes_of(r.one("Deployment", "minio"))["export"]["persistentVolumeClaim"]["claimName"] == "old-backups"
    r = render(sets=set_(**{"minio.persistence.enabled": "false", "minio.persistence.allowEphemeral": "true"}))
    r.none("PersistentVolumeClaim")
    assert volumes_of(r.one("Deployment", "minio"))["export"]["emptyDir"] == {}
    assert "LOST" in helm_notes(sets=set_(**{"minio.persistence.enabled": "false",
                                             "minio.persistence.allowEphemeral": "true"}))


@test
def helm_test_pod():
    r = render(sets=set_())
    pod = r.one("Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    c = container(pod)
    assert c["command"][:2] == ["/bin/sh", "-c"] and "rclone deletefile" in c["command"][2]
    assert "$(" not in c["command"][2], "Kubernetes would try to expand $( in the script"
    env = env_of(c)
    assert env["TEST_TARGETS"] == "sts-stackgraph-backup sts-elasticsearch-backup"
    assert env["RCLONE_S3_ENDPOINT"] == "http://rel-minio:9000"
    assert env["RCLONE_S3_ACCESS_KEY_ID"] == {"secretKeyRef": {"name": "rel-minio", "key": "accesskey"}}
    assert env["RCLONE_S3_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": "rel-minio", "key": "secretkey"}}
    assert_hardened(pod)
    render(sets=set_(**{"tests.enabled": "false"})).none("Pod")
    r = render(sets=set_(**{"backup.stackGraph.s3Prefix": "sg/graph", "backup.elasticsearch.s3Prefix": "es"}))
    assert env_of(container(r.one("Pod", "test")))["TEST_TARGETS"] == "sts-stackgraph-backup/sg/graph sts-elasticsearch-backup/es"


@test
def openshift_overrides():
    r = render(sets=set_(**{"backup.stackGraph.securityContext.enabled": "false",
                            "backup.configuration.securityContext.enabled": "false",
                            "backup.podSecurityContext": "null", "minio.podSecurityContext": "null"}))
    for obj in r.all("CronJob") + r.all("Job") + [r.one("Deployment", "minio")]:
        assert "securityContext" not in pod_spec(obj), obj["metadata"]["name"]
    assert "securityContext" not in pod_spec(r.job_templates()["job-stackgraph-restore.json"])


@test
def notes_say_which_server_runs_and_why():
    notes = helm_notes(sets=set_(**{"minio.s3gateway.enabled": "true"}))
    assert "served by rclone serve s3: minio.engine=auto: rclone serves the gateway modes" in notes, notes
    assert "helm test rel" in notes and "deleted after 24h (container multipart-cleanup)" in notes
    assert "create job --from=cronjob/rel-sts-backup-stackgraph-backup" in notes
    assert "create job --from=cronjob/rel-sts-backup-es-register" in notes
    notes = helm_notes(sets=set_())
    assert "served by rclone serve s3: minio.engine=auto: a new volume gets rclone" in notes, notes
    notes = helm_notes(sets=set_(**{"minio.engine": "minio"}))
    assert "served by MinIO: chosen with minio.engine=minio." in notes and "multipart-cleanup" not in notes
    assert "WARNING" not in notes
    notes = helm_notes(sets=set_(**MINIO_GATEWAY, **{"minio.s3gateway.enabled": "true"}))
    assert "WARNING: this MinIO gateway runs the archived release RELEASE.2022-04-29T01-27-09Z" in notes, notes


MODES = {"local": {}, "s3gateway": {"minio.s3gateway.enabled": "true"},
         "azuregateway": {"minio.azuregateway.enabled": "true", "minio.accessKey": "acct", "minio.secretKey": "a2V5"}}
MINIO_REFUSED = "minio.engine: minio cannot serve {mode} mode with minio.image.tag={tag} unless both are set knowingly"


@test
def every_mode_and_engine_renders_or_fails_with_the_right_message():
    """mode x engine: (values, the engine that must run or the message the render must fail with)."""
    default_tag = "RELEASE.2025-04-22T22-12-26Z"
    old_s3 = "RELEASE.2022-10-20T07-04-07Z"  # has the S3 gateway, not the Azure one
    cases = {
        "auto": ({}, {"local": "rclone", "s3gateway": "rclone", "azuregateway": "rclone"}),
        "rclone": ({"minio.engine": "rclone"}, {"local": "rclone", "s3gateway": "rclone", "azuregateway": "rclone"}),
        "minio": ({"minio.engine": "minio"}, {"local": "minio", "s3gateway": default_tag, "azuregateway": default_tag}),
        "minio+ack": ({"minio.engine": "minio", "minio.acknowledgeUnmaintainedGateway": "true"},
                      {"local": "minio", "s3gateway": default_tag, "azuregateway": default_tag}),
        "minio+old tag": ({"minio.engine": "minio", "minio.image.tag": MINIO_GATEWAY["minio.image.tag"]},
                          {"local": "minio", "s3gateway": MINIO_GATEWAY["minio.image.tag"],
                           "azuregateway": MINIO_GATEWAY["minio.image.tag"]}),
        "minio+ack+old tag": (MINIO_GATEWAY, {"local": "minio", "s3gateway": "minio", "azuregateway": "minio"}),
        "minio+ack+2022-10 tag": ({**MINIO_GATEWAY, "minio.image.tag": old_s3},
                                  {"local": "minio", "s3gateway": "minio", "azuregateway": old_s3}),
        "minio+ack+digest only": ({**MINIO_GATEWAY, "minio.image.tag": "", "minio.image.digest": "sha256:" + "a" * 64},
                                  {"local": "minio", "s3gateway": "minio", "azuregateway": "minio"}),
    }
    for label, (values, want) in cases.items():
        for mode, mode_values in MODES.items():
            sets = set_(**{**KEYS, **mode_values, **values})
            expected = want[mode]
            if expected in ("rclone", "minio"):
                r = render(sets=sets)
                dep, c, _ = storage(r)
                assert dep["metadata"]["labels"]["sts-backup.io/storage-engine"] == expected, (label, mode)
                assert c["command"] == [expected], (label, mode, c["command"])
                sidecars = [x["name"] for x in pod_spec(dep)["containers"]][1:]
                assert sidecars == (["multipart-cleanup"] if expected == "rclone" else []), (label, mode, sidecars)
            else:
                err = render_fails(MINIO_REFUSED.format(mode=mode, tag=expected), sets=sets)
                # one message naming both values and the alternative
                assert err.count("minio.engine: minio cannot serve") == 1, err
                for part in ("minio.image.tag", "minio.acknowledgeUnmaintainedGateway=true", "--set minio.engine=rclone"):
                    assert part in err, (label, mode, part)


@test
def the_cleanup_sidecar_walks_the_volume_or_the_two_buckets():
    roots = {}
    for mode, mode_values in MODES.items():
        dep, _, _ = storage(render(sets=set_(**{**KEYS, **mode_values})))
        side = container(dep, "multipart-cleanup")
        env = env_of(side)
        roots[mode] = env["CLEANUP_ROOTS"]
        assert env["CLEANUP_MIN_AGE"] == "24h" and env["CLEANUP_INTERVAL_SECONDS"] == "3600"
        assert '--include ".rclone_temp_multipart_*"' in side["command"][2]
        assert ("export" in mounts_of(side)) == (mode == "local")
        assert_hardened(dep)
    assert roots == {"local": "/export",
                     "s3gateway": ":s3:sts-configuration-backup :s3:sts-stackgraph-backup :s3:sts-elasticsearch-backup",
                     "azuregateway": ":azureblob:sts-configuration-backup :azureblob:sts-stackgraph-backup "
                                     ":azureblob:sts-elasticsearch-backup"}
    dep, _, _ = storage(render(sets=set_(**{"minio.rclone.multipartCleanup.enabled": "false"})))
    assert [x["name"] for x in pod_spec(dep)["containers"]] == ["minio"]
    render_fails("olderThan", sets=set_(**{"minio.rclone.multipartCleanup.olderThan": "1 day"}))


# ------------------------------------------------------------------------------------------
# upgrade path: the real helm renders against an API endpoint that holds the release's objects


def storage_deployment(engine, mode="local", claim="rel-minio", labelled=True):
    """A storage Deployment as a running release has it: ours (labelled) or the StackState chart's."""
    image, command = (("quay.io/minio/minio:RELEASE.2021-10-13T00-23-17Z", ["minio"]) if engine == "minio"
                      else ("docker.io/rclone/rclone:1.75.2", ["rclone"]))
    labels = {"app.kubernetes.io/instance": "rel"}
    if labelled:
        labels.update({"sts-backup.io/storage-engine": engine, "sts-backup.io/storage-mode": mode})
    volumes = [{"name": "export", "persistentVolumeClaim": {"claimName": claim}}] if mode == "local" else []
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "rel-minio", "namespace": "ns1", "labels": labels},
            "spec": {"template": {"spec": {"containers": [{"name": "minio", "image": image, "command": command}],
                                           "volumes": volumes}}}}


def claim(name="rel-minio", engine=None):
    labels = {"sts-backup.io/storage-engine": engine} if engine else {}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": "ns1", "labels": labels}}


def render_against(objects, sets, fails_with=None, looks_up_the_deployment=True):
    """`helm template --dry-run=server` against a stub API holding `objects`: Helm's own `lookup` runs."""
    with ApiServerStub(objects) as api:
        kubeconfig = api.kubeconfig(WORK / f"kubeconfig-{api.port}")
        extra = ["--dry-run=server", "--kubeconfig", str(kubeconfig)]
        if fails_with:
            result = render_fails(fails_with, sets=sets, extra=extra)
        else:
            result = render(sets=sets, extra=extra)
        assert not api.unexpected, api.unexpected
        if looks_up_the_deployment and not fails_with:
            assert "/apis/apps/v1/namespaces/ns1/deployments/rel-minio" in api.requests, api.requests
    return result


def engine_of(r):
    dep = r.one("Deployment", "minio")
    return dep["metadata"]["labels"]["sts-backup.io/storage-engine"], container(dep, STORAGE_CONTAINER)["command"]


@test
def install_and_upgrade_keep_the_engine_that_wrote_the_volume():
    # install: nothing in the cluster -> rclone, and the new PVC records it
    r = render_against([], set_(**KEYS))
    assert engine_of(r) == ("rclone", ["rclone"])
    assert r.one("PersistentVolumeClaim")["metadata"]["labels"]["sts-backup.io/storage-engine"] == "rclone"
    # upgrade of a release the StackState chart (or an older sts-backup) made: MinIO on the PVC, no labels
    old = [storage_deployment("minio", labelled=False), claim()]
    r = render_against(old, set_(**KEYS))
    assert engine_of(r) == ("minio", ["minio"]), engine_of(r)
    assert r.one("PersistentVolumeClaim")["metadata"]["labels"]["sts-backup.io/storage-engine"] == "minio"
    assert [c["name"] for c in pod_spec(r.one("Deployment", "minio"))["containers"]] == ["minio"]
    # negative control: without the cluster (plain helm template) the same values give rclone
    assert engine_of(render(sets=set_(**KEYS)))[0] == "rclone"
    # upgrade of our own releases: the label decides
    assert engine_of(render_against([storage_deployment("minio"), claim(engine="minio")], set_(**KEYS)))[0] == "minio"
    assert engine_of(render_against([storage_deployment("rclone"), claim(engine="rclone")], set_(**KEYS)))[0] == "rclone"
    # an explicit minio.engine=minio keeps it
    assert engine_of(render_against(old, set_(**KEYS, **{"minio.engine": "minio"})))[0] == "minio"


@test
def upgrade_refuses_to_switch_the_engine_under_a_volume():
    old = [storage_deployment("minio", labelled=False), claim()]
    err = render_against(old, set_(**KEYS, **{"minio.engine": "rclone"}),
                         fails_with="minio.engine: rclone cannot read the volume rel-minio, which minio wrote")
    assert "minio.persistence.existingClaim" in err and "Switching engines" in err
    err = render_against([storage_deployment("rclone"), claim(engine="rclone")], set_(**KEYS, **{"minio.engine": "minio"}),
                         fails_with="minio.engine: minio cannot read the volume rel-minio, which rclone wrote")
    # the way out: the migrated backups on a new claim
    r = render_against(old + [claim("rel-minio-rclone")],
                       set_(**KEYS, **{"minio.engine": "rclone", "minio.persistence.existingClaim": "rel-minio-rclone"}))
    assert engine_of(r)[0] == "rclone"
    assert volumes_of(r.one("Deployment", "minio"))["export"]["persistentVolumeClaim"]["claimName"] == "rel-minio-rclone"


@test
def a_volume_of_unknown_origin_needs_an_explicit_engine():
    # kept on uninstall by an older release: a PVC without our label, no Deployment
    render_against([claim()], set_(**KEYS), fails_with="minio.engine: auto found the existing volume rel-minio but "
                                                         "cannot tell which server wrote it")
    assert engine_of(render_against([claim()], set_(**KEYS, **{"minio.engine": "minio"})))[0] == "minio"
    assert engine_of(render_against([claim()], set_(**KEYS, **{"minio.engine": "rclone"})))[0] == "rclone"
    assert engine_of(render_against([claim(engine="minio")], set_(**KEYS)))[0] == "minio"
    # gateway modes hold plain objects in the backend: auto moves a MinIO gateway to rclone
    gw = [storage_deployment("minio", mode="s3gateway")]
    r = render_against(gw, set_(**KEYS, **{"minio.s3gateway.enabled": "true"}), looks_up_the_deployment=False)
    assert engine_of(r)[0] == "rclone"
    # a running gateway says nothing about a volume: switching to local mode is a new volume
    assert engine_of(render_against(gw, set_(**KEYS)))[0] == "rclone"


@test
def generated_credentials_survive_an_upgrade():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "rel-minio", "namespace": "ns1"},
              "data": {"accesskey": base64.b64encode(b"KeptAccessKey1").decode(),
                       "secretkey": base64.b64encode(b"KeptSecretKey1234567").decode()}}
    r = render_against([secret], set_(), looks_up_the_deployment=False)
    assert secret_data(r) == {"accesskey": "KeptAccessKey1", "secretkey": "KeptSecretKey1234567"}


# ------------------------------------------------------------------------------------------
# stores: StackGraph, the configuration and backup.stores.* from one set of helpers

STACKSTATE_51_CONFIGURATION = """
backup:
  enabled: true
  stackGraph:
    image: {tag: "5.1.0"}
  configuration:
    bucketName: sts-configuration-backup
    restore:
      enabled: true
    scheduled:
      enabled: true
      schedule: "0 4 * * *"
      backupNameTemplate: 'sts-backup-$(date +%Y%m%d-%H%M).stj'
      backupNameParseRegexp: 'sts-backup-([0-9]*-[0-9]*).stj'
      backupDatetimeParseFormat: '%Y%m%d-%H%M'
      backupRetentionTimeDelta: 'days = 365'
    securityContext: {enabled: true, fsGroup: 65534, runAsGroup: 65534, runAsNonRoot: true, runAsUser: 65534}
"""


@test
def stackstate_51_configuration_values_render_a_configuration_store():
    frag = WORK / "configuration-51.yaml"
    frag.write_text(STACKSTATE_51_CONFIGURATION)
    r = render(values=[frag])
    cj = r.one("CronJob", "configuration-backup")
    assert cj["metadata"]["name"] == "rel-sts-backup-configuration-backup"
    assert cj["metadata"]["labels"]["sts-backup.io/store"] == "configuration"
    assert cj["spec"]["schedule"] == "0 4 * * *" and cj["spec"]["concurrencyPolicy"] == "Forbid"
    main = container(cj)
    assert main["image"] == "quay.io/stackstate/container-tools:1.1.4"
    assert main["command"] == ["/sts-backup/bin/stackgraph-backup"]
    assert main["args"] == ["backup", "--", "sts", "settings", "describe", "--file", "{file}"]
    env = env_of(main)
    assert env["BACKUP_STORAGE"] == "s3://sts-configuration-backup"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_TEMPLATE"] == "sts-backup-%Y%m%d-%H%M.stj"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_NAME_PARSE_REGEXP"] == "sts-backup-([0-9]*-[0-9]*).stj"
    assert env["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA"] == "days = 365"
    assert env["BACKUP_MUST_CONTAIN"] == '"_version":', "the reference's shape check"
    assert env["STS_URL"] == "http://stackstate-router:8080"
    # the API token only as a Secret reference: never a value in the rendered objects
    assert env["STS_API_TOKEN"] == {"secretKeyRef": {"name": "sts-backup-configuration-api", "key": "token"}}
    assert env["STS_STORE"] == "configuration" and env["STS_ORCHESTRATE"] == "true"
    assert pod_spec(cj)["securityContext"]["runAsUser"] == 65534
    assert_hardened(cj)
    retention = r.one("CronJob", "configuration-retention")
    assert env_of(container(retention))["BACKUP_STORAGE"] == "s3://sts-configuration-backup"
    assert env_of(container(retention))["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_RETENTION_TIME_DELTA"] == "days = 365"
    t = r.job_templates()
    restore = t["job-configuration-restore.json"]
    c = container(restore)
    assert c["args"] == ["restore", "--", "sts", "settings", "apply", "--file", "{file}"]
    renv = env_of(c)
    assert renv["RESTORE_FORCE"] == "__FORCE__" and "RESTORE_FORCE_ARG" not in renv
    assert renv["RESTORE_EMPTY_CHECK"].startswith("sh -c "), "a non-empty configuration is refused without -force"
    assert renv["STS_API_TOKEN"] == env["STS_API_TOKEN"]
    # no writers to scale (restore.scaleDownSelector empty): the restore still takes the store's
    # lock (--orchestrate) and scales nothing (STS_NO_SCALE_DOWN)
    assert renv["STS_ORCHESTRATE"] == "true" and renv["STS_STORE"] == "configuration"
    assert renv["STS_NO_SCALE_DOWN"] == "true" and "STS_SCALE_DOWN_SELECTOR" not in renv
    assert "serviceAccountName" in pod_spec(restore)
    sel = render(values=[frag], sets={"backup.configuration.restore.scaleDownSelector": "app=sts-settings-writer"})
    renv = env_of(container(sel.job_templates()["job-configuration-restore.json"]))
    assert renv["STS_STORE"] == "configuration" and renv["STS_SCALE_DOWN_SELECTOR"] == "app=sts-settings-writer"
    assert "STS_NO_SCALE_DOWN" not in renv
    assert env_of(container(t["job-configuration-list.json"]))["BACKUP_STORAGE"] == "s3://sts-configuration-backup"
    assert_hardened(restore)
    monitor = json.loads(r.one("ConfigMap", "monitor")["data"]["config.json"])
    assert [(s["name"], s["storage"], s["schedule"]) for s in monitor["stores"]] == [
        ("stackgraph", "s3://sts-stackgraph-backup", "0 3 * * *"),
        ("configuration", "s3://sts-configuration-backup", "0 4 * * *")]
    # the ignored-value note is gone from the values and the README
    values = (CHART / "values.yaml").read_text()
    assert "configuration backup is not part of this chart" not in values
    assert "configuration backup is not part of this chart" not in (CHART / "README.md").read_text()
    # the token Secret can be switched off; a schema-valid name is required otherwise
    r = render(values=[frag], sets={"backup.configuration.apiToken.existingSecret": ""})
    assert "STS_API_TOKEN" not in env_of(container(r.one("CronJob", "configuration-backup")))


@test
def configuration_store_switches():
    r = render(sets=set_(backup__configuration__scheduled__enabled="false"))
    r.none("CronJob", "configuration-backup")
    r.none("CronJob", "configuration-retention")
    assert "job-configuration-restore.json" in r.job_templates()
    monitor = json.loads(r.one("ConfigMap", "monitor")["data"]["config.json"])
    assert [s["name"] for s in monitor["stores"]] == ["stackgraph"]
    r = render(sets=set_(backup__configuration__restore__enabled="false"))
    r.one("CronJob", "configuration-backup")
    assert not any(k.startswith("job-configuration-") for k in r.job_templates())
    assert r.job_templates()["stores"] == "stackgraph"
    r = render(sets=set_(backup__configuration__scheduled__retentionJob__enabled="false"))
    r.one("CronJob", "configuration-backup")
    r.none("CronJob", "configuration-retention")


STORE_EXAMPLES = [CHART / "examples" / "store-etcd.yaml", CHART / "examples" / "store-postgresql.yaml"]


@test
def stores_declared_in_values_render_through_the_same_helpers():
    r = render(values=STORE_EXAMPLES)
    names = {(d["kind"], d["metadata"]["name"]) for d in r.docs}
    for store in ("stackgraph", "configuration", "etcd", "postgresql"):
        for suffix in ("backup", "retention"):
            assert ("CronJob", f"rel-sts-backup-{store}-{suffix}") in names, (store, suffix)
    t = r.job_templates()
    assert t["stores"] == "stackgraph configuration etcd postgresql"
    sg, etcd, pg = (r.one("CronJob", f"{s}-backup") for s in ("stackgraph", "etcd", "postgresql"))
    # one mechanism: the same pod shape as StackGraph's (init copy of the binary, hardening, storage)
    for cj in (etcd, pg):
        ps = pod_spec(cj)
        assert ps["initContainers"] == pod_spec(sg)["initContainers"]
        assert volumes_of(cj)["s3-credentials"] == volumes_of(sg)["s3-credentials"]
        assert cj["spec"]["concurrencyPolicy"] == "Forbid"
        assert_hardened(cj)
        assert ps["serviceAccountName"] == "rel-sts-backup-orchestrate"
    e = container(etcd)
    assert e["image"] == "quay.io/coreos/etcd:v3.5.17"
    assert e["args"] == ["backup", "--", "etcdctl", "snapshot", "save", "{file}"]
    eenv = env_of(e)
    assert eenv["BACKUP_STORAGE"] == "s3://sts-etcd-backup" and eenv["STS_STORE"] == "etcd"
    assert eenv["BACKUP_SCRATCH_DIR"] == "/scratch" and eenv["BACKUP_COMPRESS"] == "zstd"
    assert eenv["ETCDCTL_CERT"] == "/etc/etcd-tls/tls.crt"
    assert volumes_of(etcd)["etcd-tls"]["secret"]["secretName"] == "etcd-client-tls"
    assert eenv["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_KEEP_WEEKLY"] == "8"
    assert etcd["spec"]["schedule"] == "0 2 * * *"
    p = container(pg)
    assert p["args"] == ["backup", "--", "pg_dump", "--format=custom", "--no-owner", "--dbname=app"]
    penv = env_of(p)
    assert "BACKUP_SCRATCH_DIR" not in penv and "scratch" not in volumes_of(pg), "pg_dump streams, no scratch file"
    assert penv["PGPASSWORD"] == {"secretKeyRef": {"name": "app-db", "key": "password"}}
    assert penv["BACKUP_MUST_CONTAIN"] == "PGDMP"
    # defaults a store does not set come from the store defaults (StackGraph's shape)
    assert penv["BACKUP_STACKGRAPH_SCHEDULED_BACKUP_MIN_KEEP"] == "1"
    assert pg["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] == 1800 + 10 * 1024 // 10
    restore = t["job-postgresql-restore.json"]
    renv = env_of(container(restore))
    assert renv["RESTORE_FORCE_ARG"] == "--clean" and renv["STS_SCALE_DOWN_SELECTOR"] == "app.kubernetes.io/name=app"
    assert "psql" in renv["RESTORE_EMPTY_CHECK"] and renv["STS_STORE"] == "postgresql"
    assert t["postgresql-scale-down-selector"] == "app.kubernetes.io/name=app"
    erestore = t["job-etcd-restore.json"]
    assert container(erestore)["args"][-2:] == ["--data-dir", "/var/lib/etcd-restore/data"]
    assert env_of(container(erestore))["RESTORE_EMPTY_CHECK"] == "test ! -e /var/lib/etcd-restore/data"
    assert env_of(container(t["job-etcd-finalize.json"]))["STS_STORE"] == "etcd"
    assert env_of(container(t["job-etcd-list.json"]))["BACKUP_STORAGE"] == "s3://sts-etcd-backup"
    monitor = json.loads(r.one("ConfigMap", "monitor")["data"]["config.json"])
    assert [s["name"] for s in monitor["stores"]] == ["stackgraph", "configuration", "etcd", "postgresql"]
    # a user's `false` survives the defaults (sprig's merge would turn it back to true)
    r = render(values=STORE_EXAMPLES, sets={"backup.stores.etcd.scheduled.enabled": "false",
                                            "backup.stores.etcd.orchestrate.enabled": "false"})
    r.none("CronJob", "etcd-backup")
    assert "STS_ORCHESTRATE" not in env_of(container(r.job_templates()["job-etcd-restore.json"]))
    assert "job-etcd-finalize.json" not in r.job_templates()


@test
def bad_store_values_fail_naming_the_value():
    def store(**kw):
        sets = set_(**{"backup.stores.db.image.repository": "postgres", "backup.stores.db.bucketName": "db-backup",
                       "backup.stores.db.exportCommand[0]": "pg_dump", "backup.stores.db.importCommand[0]": "pg_restore"})
        sets.update(kw)
        return sets
    render(sets=store())  # the base is valid
    without_export = store()
    del without_export["backup.stores.db.exportCommand[0]"]
    render_fails("backup.stores.db.exportCommand: required", sets=without_export)
    without_import = store()
    del without_import["backup.stores.db.importCommand[0]"]
    render_fails("backup.stores.db.importCommand: required", sets=without_import)
    render(sets={**without_import, "backup.stores.db.restore.enabled": "false"})
    # the schema names the value of a schedule in the wrong dialect; the chart's check says why
    render_fails("/backup/stores/db/scheduled/schedule", sets=store(**{"backup.stores.db.scheduled.schedule": "0 0 3 * * ?"}))
    render_fails('backup.stores.db.scheduled.schedule: "0 0 3 * * ?" is not a Kubernetes cron schedule',
                 sets=store(**{"backup.stores.db.scheduled.schedule": "0 0 3 * * ?"}), extra=SKIP_SCHEMA)
    render_fails("backup.configuration.scheduled.schedule: \"0 0 4 * * ?\" is not a Kubernetes cron schedule",
                 sets=set_(**{"backup.configuration.scheduled.schedule": "0 0 4 * * ?"}), extra=SKIP_SCHEMA)
    render_fails("backup.stores.db.image.repository: required",
                 sets=store(**{"backup.stores.db.image.repository": ""}), extra=SKIP_SCHEMA)
    render_fails("backup.stores.db.bucketName: required", sets=store(**{"backup.stores.db.bucketName": ""}),
                 extra=SKIP_SCHEMA)
    render_fails("backup.stores.db.scheduled.backupNameTemplate",
                 sets=store(**{"backup.stores.db.scheduled.backupNameTemplate": "db-$(hostname)"}))
    bad_name = {k.replace(".db.", ".Bad_Name."): v for k, v in store().items()}
    render_fails("backup.stores.Bad_Name: the store name", sets=bad_name, extra=SKIP_SCHEMA)
    taken = {k.replace(".db.", ".elasticsearch."): v for k, v in store().items()}
    render_fails("backup.stores.elasticsearch: the store name \"elasticsearch\" is taken", sets=taken)
    render_fails("additional properties 'exportComand' not allowed",
                 sets=store(**{"backup.stores.db.exportComand[0]": "x"}))


# ------------------------------------------------------------------------------------------
# issue 18: signing, encryption, Object Lock and off-site copies (each key only where it belongs)

SECURE_EXAMPLE = CHART / "examples" / "offsite-signed-encrypted.yaml"
# A Secret's content never appears in values: these markers must not occur anywhere rendered.
SECRET_MARKERS = ("PRIVATE KEY", "AGE-SECRET-KEY")


def job_pods(r):
    """Every (label, pod-bearing object) of a render: CronJobs, Deployments, the job templates."""
    out = [(d["metadata"]["name"], d) for d in r.docs if d["kind"] in ("CronJob", "Deployment", "Job", "Pod")]
    for key, job in r.job_templates().items():
        if key.endswith(".json"):
            out.append((key, job))
    return out


def files_of(obj):
    """(env dict, mounted volume names -> volume) of the main container of a pod-bearing object."""
    c = pod_spec(obj)["containers"][-1]
    vols = volumes_of(obj)
    return env_of(c), {m["name"]: vols[m["name"]] for m in c.get("volumeMounts", [])}


def assert_no_secret_rendered(r):
    for name, obj in job_pods(r):
        for c in pod_spec(obj)["containers"] + pod_spec(obj).get("initContainers", []):
            for arg in c.get("args", []) + c.get("command", []):
                assert not any(m in arg for m in SECRET_MARKERS), (name, arg)
            for e in c.get("env", []):
                assert not any(m in str(e.get("value", "")) for m in SECRET_MARKERS), (name, e)
    text = json.dumps(r.docs)
    assert not any(m in text for m in SECRET_MARKERS), "secret material rendered"


@test
def signing_encryption_keys_reach_only_their_jobs():
    r = render(values=[CHART / "examples" / "local-pvc.yaml", SECURE_EXAMPLE])
    trusted = "/etc/sts-backup/trusted-keys/signing-2026.pem"
    cm = r.one("ConfigMap", "trusted-keys")
    assert "-----BEGIN PUBLIC KEY-----" in cm["data"]["signing-2026.pem"]
    seen = set()
    for name, obj in job_pods(r):
        env, mounted = files_of(obj)
        kind = ("backup" if name.endswith("-backup") else
                "restore" if "-restore" in name and "elasticsearch" not in name else
                # no manifest reader: Elasticsearch, the storage service, finalize, the helm test pod
                "none" if any(w in name for w in ("elasticsearch", "es-register", "minio", "finalize",
                                                  "test-storage")) else
                "other")
        seen.add(kind)
        secrets = {v["secret"]["secretName"] for v in mounted.values() if "secret" in v}
        if kind == "backup":
            assert env["STS_SIGNING_KEY"] == "/etc/sts-backup/signing/signing-key.pem", name
            assert mounted["signing-key"]["secret"]["secretName"] == "sts-backup-signing"
            assert env["STS_ENCRYPT_TO"].count("age1") == 2, name
            assert env["STS_TRUSTED_KEYS"] == trusted, name
        else:
            assert "STS_SIGNING_KEY" not in env and "sts-backup-signing" not in secrets, name
            assert "STS_ENCRYPT_TO" not in env, name
        if kind == "restore":
            assert env["STS_IDENTITY_FILE"] == "/etc/sts-backup/age/identity.txt", name
            assert mounted["age-identities"]["secret"]["secretName"] == "sts-backup-age", name
            assert all(m["readOnly"] for m in pod_spec(obj)["containers"][-1]["volumeMounts"]
                       if m["name"] in ("age-identities", "trusted-keys")), name
        else:
            # never an identity in a backup CronJob (or anything but a restore)
            assert "STS_IDENTITY_FILE" not in env and "sts-backup-age" not in secrets, name
        if kind in ("backup", "restore", "other"):
            assert env.get("STS_TRUSTED_KEYS") == trusted, (name, kind)
            assert mounted["trusted-keys"]["configMap"]["name"] == cm["metadata"]["name"], name
        else:
            assert "STS_TRUSTED_KEYS" not in env, name
    assert seen == {"backup", "restore", "none", "other"}, seen
    assert_no_secret_rendered(r)
    # off by default: no key env, no key volume anywhere
    plain = render(sets=TAG)
    for name, obj in job_pods(plain):
        env, mounted = files_of(obj)
        assert not {k for k in env if k.startswith(("STS_SIGNING", "STS_TRUSTED", "STS_ENCRYPT", "STS_IDENTITY"))}, name
        assert not {"signing-key", "age-identities", "trusted-keys"} & set(mounted), name


@test
def replicate_cronjob_per_store_with_its_own_destination():
    extra = {"backup.stores.db.image.repository": "postgres", "backup.stores.db.bucketName": "db-backup",
             "backup.stores.db.exportCommand[0]": "pg_dump", "backup.stores.db.importCommand[0]": "pg_restore",
             "backup.stores.db.replicate.enabled": "true", "backup.stores.db.replicate.bucketName": "db-copy",
             "backup.stores.db.replicate.s3Prefix": "eu",
             "backup.stores.db.replicate.endpoint": "https://gateway.azure.example:9000",
             "backup.stores.db.replicate.existingSecret": "azure-gw",
             "backup.stores.db.replicate.caSecret": "azure-gw-ca",
             "backup.stores.db.replicate.objectLock": "governance",
             "backup.stores.db.replicate.retention": "7d"}
    r = render(values=[CHART / "examples" / "local-pvc.yaml", SECURE_EXAMPLE], sets=extra)
    for store, bucket in (("stackgraph", "acme-sts-stackgraph-offsite"),
                          ("configuration", "acme-sts-configuration-offsite"), ("db", "db-copy/eu")):
        cj = r.one("CronJob", f"{store}-replicate")
        assert cj["metadata"]["labels"]["sts-backup.io/store"] == store
        assert cj["spec"]["concurrencyPolicy"] == "Forbid" and cj["spec"]["schedule"] == "0 6 * * *"
        assert_hardened(cj)
        c = container(cj)
        assert c["command"] == ["/usr/local/bin/stackgraph-backup"] and c["args"] == ["replicate"]
        env, mounted = files_of(cj)
        assert env["REPLICA_STORAGE"] == f"s3://{bucket}", env
        assert env["BACKUP_STORAGE"].startswith("s3://") and env["S3_CREDENTIALS_DIR"] == "/etc/sts-backup/s3"
        assert env["REPLICA_S3_CREDENTIALS_DIR"] == "/etc/sts-backup/replica-s3"
        assert mounted["replica-credentials"]["secret"]["items"] == [
            {"key": "accesskey", "path": "accesskey"}, {"key": "secretkey", "path": "secretkey"}]
        # least privilege: only its two credentials, the public keys and /tmp; no token
        assert set(mounted) <= {"s3-credentials", "tmp", "trusted-keys", "replica-credentials", "replica-ca"}, mounted
        assert pod_spec(cj)["automountServiceAccountToken"] is False
        assert all(e.get("valueFrom") is None for e in c["env"]), "no secret through env"
    sg = env_of(container(r.one("CronJob", "stackgraph-replicate")))
    assert sg["REPLICA_S3_ENDPOINT"] == "https://s3.eu-central-1.amazonaws.com"
    assert sg["REPLICA_S3_REGION"] == "eu-central-1"
    assert sg["REPLICA_OBJECT_LOCK"] == "compliance" and sg["REPLICA_RETENTION_TIME_DELTA"] == "days = 30"
    assert volumes_of(r.one("CronJob", "stackgraph-replicate"))["replica-credentials"]["secret"]["secretName"] == \
        "sts-backup-offsite"
    db = r.one("CronJob", "db-replicate")
    denv = env_of(container(db))
    # the store's own destination overrides the defaults key by key
    assert denv["REPLICA_S3_ENDPOINT"] == "https://gateway.azure.example:9000"
    assert denv["REPLICA_S3_REGION"] == "eu-central-1"
    assert denv["REPLICA_S3_CA_BUNDLE"] == "/etc/sts-backup/replica-ca/ca.crt"
    assert denv["REPLICA_OBJECT_LOCK"] == "governance" and denv["REPLICA_RETENTION_TIME_DELTA"] == "7d"
    assert volumes_of(db)["replica-credentials"]["secret"]["secretName"] == "azure-gw"
    assert volumes_of(db)["replica-ca"]["secret"]["secretName"] == "azure-gw-ca"
    # the copy's Job templates: the same Job, storage pointed at the copy, only the copy's keys mounted
    t = r.job_templates()
    for store, bucket, secret in (("stackgraph", "acme-sts-stackgraph-offsite", "sts-backup-offsite"),
                                  ("db", "db-copy/eu", "azure-gw")):
        for what in ("list", "restore"):
            primary, copy = t[f"job-{store}-{what}.json"], t[f"job-{store}-{what}-replica.json"]
            penv, cenv = env_of(container(primary)), env_of(container(copy))
            assert cenv["BACKUP_STORAGE"] == f"s3://{bucket}", (store, what)
            assert volumes_of(copy)["s3-credentials"]["secret"]["secretName"] == secret
            assert cenv["S3_CREDENTIALS_DIR"] == penv["S3_CREDENTIALS_DIR"]
            assert {k: v for k, v in cenv.items() if not k.startswith("S3_") and k != "BACKUP_STORAGE"} == \
                {k: v for k, v in penv.items() if not k.startswith("S3_") and k != "BACKUP_STORAGE"}, (store, what)
            assert container(copy)["args"] == container(primary)["args"]
    # a store without a copy has no replica templates and no CronJob
    r2 = render(sets=TAG)
    r2.none("CronJob", "stackgraph-replicate")
    assert not [k for k in r2.job_templates() if k.endswith("-replica.json")]


@test
def object_lock_env_per_store_and_refused_where_it_cannot_work():
    gateway = {"minio.s3gateway.enabled": "true", "minio.engine": "minio",
               "minio.image.tag": "RELEASE.2022-04-29T01-27-09Z", "minio.acknowledgeUnmaintainedGateway": "true",
               "backup.objectLock.mode": "governance", "backup.configuration.objectLock.mode": "none"}
    r = render(sets=set_(**gateway))
    assert env_of(container(r.one("CronJob", "stackgraph-backup")))["S3_OBJECT_LOCK"] == "governance"
    assert "S3_OBJECT_LOCK" not in env_of(container(r.one("CronJob", "configuration-backup")))
    r = render(sets=set_(**gateway, **{"backup.stackGraph.objectLock.mode": "compliance"}))
    assert env_of(container(r.one("CronJob", "stackgraph-backup")))["S3_OBJECT_LOCK"] == "compliance"
    # the binary refuses a lock without retention (exit 2); the chart says so first
    render_fails("backup.stackGraph.scheduled.backupRetentionTimeDelta: Object Lock (governance)",
                 sets=set_(**gateway, **{"backup.stackGraph.scheduled.backupRetentionTimeDelta": ""}))
    # rclone serve s3 (the default engine, every mode) and a local PVC cannot lock
    render_fails("rclone serve s3 reports no Object Lock configuration",
                 sets=set_(**{"minio.s3gateway.enabled": "true", "backup.objectLock.mode": "governance"}))
    render_fails("local mode keeps the backups on a PVC",
                 sets=set_(**{"minio.engine": "minio", "backup.objectLock.mode": "compliance"}))


@test
def impossible_security_values_fail_naming_the_value():
    base = [CHART / "examples" / "local-pvc.yaml", SECURE_EXAMPLE]
    render(values=base)  # the base is valid
    render_fails("backup.signing.existingSecret: trusted keys are set", values=base,
                 sets={"backup.signing.existingSecret": ""})
    render_fails("backup.stackGraph.replicate.bucketName: required", values=base,
                 sets={"backup.stackGraph.replicate.bucketName": ""}, extra=SKIP_SCHEMA)
    render_fails("the destination is the store's own bucket", values=base,
                 sets={"backup.stackGraph.replicate.bucketName": "sts-stackgraph-backup",
                       "backup.replicate.endpoint": "http://rel-minio:9000"})
    render_fails("backup.configuration.replicate.retention: the copies are locked", values=base,
                 sets={"backup.replicate.retention": "", "backup.configuration.scheduled.backupRetentionTimeDelta": ""})
    render_fails("backup.encryption.identities.keys: name the keys", values=base,
                 sets={"backup.encryption.identities.keys": "null"}, extra=SKIP_SCHEMA)
    render_fails("backup.signing.trustedKeysConfigMap.keys", values=base,
                 sets={"backup.signing.trustedKeysConfigMap.name": "old-keys"})
    # key material in values is refused: by the schema, and by the templates without it
    for extra in ((), SKIP_SCHEMA):
        render_fails("AGE-SECRET-KEY" if extra else "recipients", values=base, extra=extra,
                     sets={"backup.encryption.recipients[0]": "AGE-SECRET-KEY-1QQQQ"})
        render_fails("not a PEM public key" if extra else "trustedKeys", values=base, extra=extra,
                     sets={"backup.signing.trustedKeys.k\\.pem": "-----BEGIN PRIVATE KEY-----x"})
    render_fails("replicate", values=base, sets={"backup.replicate.objectLock": "forever"})


# ------------------------------------------------------------------------------------------
# names


@test
def names_stay_within_kubernetes_limits():
    release = "a-very-long-release-name-for-an-observability-stack"  # 51 characters
    r = render(sets=set_(), release=release)
    names = [(d["kind"], d["metadata"]["name"]) for d in r.docs]
    dns = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    for kind, name in names:
        assert dns.match(name), name
        assert len(name) <= (52 if kind == "CronJob" else 63), (kind, name, len(name))
    cronjobs = [n for k, n in names if k == "CronJob"]
    assert len(set(cronjobs)) == 5, cronjobs
    assert all(n.endswith(("-stackgraph-backup", "-stackgraph-retention", "-es-register", "-configuration-backup",
                           "-configuration-retention")) for n in cronjobs)
    assert r.one("Service", "minio")["metadata"]["name"] == release + "-minio"
    r = render(sets=set_(**{"minio.fullnameOverride": "stackstate-minio", "fullnameOverride": "sts"}))
    assert r.one("Service", "minio")["metadata"]["name"] == "stackstate-minio"
    assert env_of(container(r.one("CronJob", "stackgraph-backup")))["S3_ENDPOINT"] == "http://stackstate-minio:9000"
    assert r.one("CronJob", "stackgraph-backup")["metadata"]["name"] == "sts-stackgraph-backup"


# ------------------------------------------------------------------------------------------
# StackState 5.1 docs fragments


DOC_FRAGMENTS = {
    "aws": """
backup:
  enabled: true
  stackGraph:
    bucketName: AWS_STACKGRAPH_BUCKET
  elasticsearch:
    bucketName: AWS_ELASTICSEARCH_BUCKET
minio:
  accessKey: YOUR_ACCESS_KEY
  secretKey: YOUR_SECRET_KEY
  s3gateway:
    enabled: true
    accessKey: AWS_ACCESS_KEY
    secretKey: AWS_SECRET_KEY
""",
    "azure": """
backup:
  enabled: true
minio:
  accessKey: AZURE_STORAGE_ACCOUNT_NAME
  secretKey: AZURE_STORAGE_ACCOUNT_KEY
  azuregateway:
    enabled: true
""",
    "local": """
backup:
  enabled: true
minio:
  accessKey: YOUR_ACCESS_KEY
  secretKey: YOUR_SECRET_KEY
  persistence:
    enabled: true
""",
}


@test
def stackstate_docs_fragment_aws_s3():
    r = render(values=[CHART / "examples" / "stackstate-5.1-aws-s3.yaml"])
    dep, c, env = storage(r)
    assert dep["metadata"]["labels"]["sts-backup.io/storage-mode"] == "s3gateway"
    # the StackState docs' values with the chart's defaults: a server that has the S3 gateway (issue 19)
    assert c["command"] == ["rclone"] and c["args"][-1] == ":s3:"
    data = secret_data(r)
    assert data["accesskey"] == "stsminio01" and data["awsAccessKeyId"] == "AKIAIOSFODNN7EXAMPLE"
    assert env_of(container(r.one("CronJob", "stackgraph-backup")))["BACKUP_STORAGE"] == "s3://acme-sts-stackgraph-backup"
    assert env_of(container(r.one("Job")))["BACKUP_ELASTICSEARCH_BUCKET_NAME"] == "acme-sts-elasticsearch-backup"
    r.none("PersistentVolumeClaim")


@test
def stackstate_docs_fragment_azure():
    r = render(values=[CHART / "examples" / "stackstate-5.1-azure.yaml"])
    dep, c, env = storage(r)
    assert dep["metadata"]["labels"]["sts-backup.io/storage-mode"] == "azuregateway"
    assert c["command"] == ["rclone"] and c["args"][-1] == ":azureblob:"
    assert secret_data(r)["accesskey"] == "acmestsbackups"
    r.none("PersistentVolumeClaim")
    # the verbatim docs fragment (placeholders, no image tag) passes the Azure credential rules
    frag = WORK / "azure-verbatim.yaml"
    frag.write_text(DOC_FRAGMENTS["azure"])
    r = render(values=[frag], sets={"backup.stackGraph.image.tag": "5.1.0"})
    assert secret_data(r)["secretkey"] == "AZURE_STORAGE_ACCOUNT_KEY"


@test
def stackstate_docs_fragment_local():
    r = render(values=[CHART / "examples" / "stackstate-5.1-local.yaml"])
    dep, c, env = storage(r)
    assert dep["metadata"]["labels"]["sts-backup.io/storage-mode"] == "local"
    r.one("PersistentVolumeClaim")
    assert secret_data(r) == {"accesskey": "stsminio01", "secretkey": "8SecretKeyForMinio8"}


@test
def stackstate_docs_fragments_verbatim_are_refused_with_a_clear_message():
    for name in ("aws", "local"):
        frag = WORK / f"{name}-verbatim.yaml"
        frag.write_text(DOC_FRAGMENTS[name])
        err = render_fails("minio.accessKey: must be 5 to 20 letters or digits", values=[frag], extra=SKIP_SCHEMA)
        assert "minio.secretKey: must be 8 to 40 letters or digits" in err
        assert "backup.stackGraph.image.tag: required" in err
    render_fails("minio.accessKey: must be 5 to 20", values=[WORK / "local-verbatim.yaml"])
    # the AWS placeholders are not valid bucket names either: the schema says so first
    render_fails("/backup/stackGraph/bucketName", values=[WORK / "aws-verbatim.yaml"])


# ------------------------------------------------------------------------------------------
# fail paths (schema first; the same checks in the templates with the schema skipped)


@test
def fail_both_gateways():
    render_fails("enable at most one gateway",
                 sets=set_(**{"minio.s3gateway.enabled": "true", "minio.azuregateway.enabled": "true"}))


@test
def fail_local_without_persistence():
    render_fails("LOSES THEM", sets=set_(**{"minio.persistence.enabled": "false"}))
    render(sets=set_(**{"minio.persistence.enabled": "false", "minio.persistence.allowEphemeral": "true"}))


@test
def fail_bad_credentials():
    render_fails("minio.accessKey: must be 5 to 20", sets=set_(**{"minio.accessKey": "abcd"}))
    render_fails("minio.accessKey: must be 5 to 20", sets=set_(**{"minio.accessKey": "a" * 21}))
    render_fails("minio.accessKey: must be 5 to 20", sets=set_(**{"minio.accessKey": "with-dash"}))
    render_fails("minio.secretKey: must be 8 to 40", sets=set_(**{"minio.secretKey": "short7c"}))
    render_fails("minio.secretKey: must be 8 to 40", sets=set_(**{"minio.secretKey": "x" * 41}))
    render_fails("minio.secretKey: must be 8 to 40", sets=set_(**{"minio.secretKey": "has/slash+plus"}))
    render_fails('"setme" is the StackState placeholder', sets=set_(**{"minio.accessKey": "setme"}))
    render_fails("minio.accessKey: must be 5 to 20",
                 sets=set_(**{"minio.accessKey": "bad key", "minio.s3gateway.enabled": "true"}))
    render(sets=set_(**{"minio.accessKey": "abcde", "minio.secretKey": "a" * 40}))
    render(sets=set_(**{"minio.accessKey": "a" * 20, "minio.secretKey": "abcdefgh"}))


@test
def fail_azure_without_account():
    render_fails("Azure gateway mode needs the storage account name",
                 sets=set_(**{"minio.azuregateway.enabled": "true"}))
    render(sets=set_(**{"minio.azuregateway.enabled": "true", "minio.existingSecret": "azure-account"}))


@test
def fail_half_aws_keys():
    render_fails("set both (an IAM user) or neither",
                 sets=set_(**{"minio.s3gateway.enabled": "true", "minio.s3gateway.accessKey": "AKIA"}))


@test
def fail_missing_server_image_tag():
    render_fails("backup.stackGraph.image.tag: required", sets={"backup.enabled": "true"})
    # not needed when nothing runs the graph server image
    render(sets={"backup.enabled": "true", "backup.stackGraph.scheduled.enabled": "false",
                 "backup.stackGraph.restore.enabled": "false"})


@test
def fail_wrong_cron_dialects():
    # the StackState mix-ups: the ES form in the CronJob, the CronJob form in SLM
    for bad in ("0 3 * * * ?", "0 0 3 * *  *  *", "every day", "0 3 * *"):
        render_fails("/backup/stackGraph/scheduled/schedule",
                     sets=set_(backup__stackGraph__scheduled__schedule=bad))
        render_fails("is not a Kubernetes cron schedule",
                     sets=set_(backup__stackGraph__scheduled__schedule=bad), extra=SKIP_SCHEMA)
    render_fails("is not a Kubernetes cron schedule",
                 sets=set_(backup__stackGraph__scheduled__retentionJob__schedule="0 0 4 * * ?"), extra=SKIP_SCHEMA)
    render_fails("/backup/stackGraph/scheduled/retentionJob/schedule",
                 sets=set_(backup__stackGraph__scheduled__retentionJob__schedule="0 0 4 * * ?"))
    for bad in ("0 0 3 * *", "0 3 * * *", "0 0 3 * * *", "0 0 3 ? * ?", "0 0 3 * * ? 2030 1"):
        render_fails("/backup/elasticsearch/scheduled/schedule",
                     sets=set_(backup__elasticsearch__scheduled__schedule=bad))
        render_fails("is not an Elasticsearch cron schedule",
                     sets=set_(backup__elasticsearch__scheduled__schedule=bad), extra=SKIP_SCHEMA)
    for good in ("@daily", "*/15 1-5 * * MON-FRI", " 0 3 * * * "):
        render(sets=set_(backup__stackGraph__scheduled__schedule=good))
    for good in ("0 30 1 * * ?", "0 0 3 ? * MON-FRI", "0 0 3 * * ? 2030", "0 0/15 * 1 * ?"):
        render(sets=set_(backup__elasticsearch__scheduled__schedule=good))
    # a disabled schedule is not checked by the templates
    render(sets=set_(backup__elasticsearch__scheduled__enabled="false",
                     backup__elasticsearch__scheduled__schedule="0 0 3 * *"), extra=SKIP_SCHEMA)


@test
def fail_shell_name_template():
    render_fails("has shell syntax: only $(date +FORMAT) is understood",
                 sets=set_(backup__stackGraph__scheduled__backupNameTemplate="sts-$(hostname)-%Y.graph"))
    render_fails("has shell syntax: only $(date +FORMAT) is understood",
                 sets=set_(backup__stackGraph__scheduled__backupNameTemplate="sts-${HOME}.graph"))


@test
def fail_es_username_without_secret():
    render_fails("set backup.elasticsearch.auth.existingSecret too",
                 sets=set_(backup__elasticsearch__auth__username="elastic"))


@test
def fail_messages_are_collected():
    err = render_fails("VALUES VALIDATION",
                       sets={"backup.enabled": "true", "minio.s3gateway.enabled": "true",
                             "minio.azuregateway.enabled": "true"})
    assert "enable at most one gateway" in err and "backup.stackGraph.image.tag: required" in err


# ------------------------------------------------------------------------------------------
# strict schema validation of everything rendered above


_validations = {}


def validation(version):
    """kubernetes-validate of everything rendered so far; all versions run in parallel."""
    if not _validations:
        files = [str(f) for f in sorted(RENDERED.iterdir())]
        for v in K8S_VERSIONS:
            _validations[v] = subprocess.Popen(["kubernetes-validate", "--strict", "--quiet", "-k", v] + files,
                                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = _validations[version]
    output, _ = proc.communicate()
    return proc.returncode, output


def make_k8s_validation_test(version):
    def fn():
        files = sorted(RENDERED.iterdir())
        assert len(files) > 50, f"too few rendered files to validate: {len(files)}"
        assert len([f for f in files if f.name.startswith("filled-job-")]) >= 4, "no job templates extracted"
        rc, output = validation(version)
        assert rc == 0, output[-4000:]

    fn.__name__ = f"kubernetes_validate_strict_{version.replace('.', '_')}"
    return fn


@test
def kubernetes_validate_catches_a_broken_manifest():
    bad = WORK / "bad.yaml"
    bad.write_text("apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: x}\n"
                   "spec: {schedule: '0 3 * * *', concurrencyPolicyy: Forbid, jobTemplate: {spec: {template: "
                   "{spec: {restartPolicy: Never, containers: [{name: a, image: b}]}}}}}\n")
    proc = subprocess.run(["kubernetes-validate", "--strict", "--quiet", "-k", "1.28.0", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode != 0, "kubernetes-validate accepted an unknown field"


# ------------------------------------------------------------------------------------------
# the rclone engine for real: run the storage container's command line as rendered












def run_test_pod(rendered, port, override_secret=None):
    """Runs the helm test pod's command line against the local storage service."""
    c = container(rendered.one("Pod", "test"))
    env = resolve_env(c, rendered)
    env["RCLONE_S3_ENDPOINT"] = f"http://127.0.0.1:{port}"
    if override_secret:
        env["RCLONE_S3_SECRET_ACCESS_KEY"] = override_secret
    tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="test-pod."))
    argv = [a.replace("/tmp/", f"{tmp}/") for a in c["command"] + c.get("args", [])]
    assert argv[0] == "/bin/sh"
    env = {"PATH": os.environ["PATH"], **env, "HOME": str(tmp), "HOSTNAME": rendered.one("Pod", "test")["metadata"]["name"]}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)


def assert_test_pod_passes(rendered, port, targets):
    """The helm test pod passes, reports every target, and leaves no probe behind."""
    ok = run_test_pod(rendered, port)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    for target in targets:
        assert f"helm test: {target}: list, put, get, delete ok" in ok.stdout, ok.stdout
    return ok


@test
def rclone_engine_local_mode_runs_as_rendered():
    r = render(sets=set_(), keep=False)  # the default engine, generated credentials
    data = secret_data(r)
    data_dir = WORK / "local-export"
    data_dir.mkdir()
    port = free_port()
    proc, env = start_storage(r, data_dir, port)
    try:
        assert env["RCLONE_AUTH_KEY"] == f'"{data["accesskey"]},{data["secretkey"]}"'
        base = f"http://127.0.0.1:{port}"
        assert s3_call("PUT", f"{base}/sts-stackgraph-backup", data["accesskey"], data["secretkey"]) == "200"
        assert (data_dir / "sts-stackgraph-backup").is_dir()
        assert s3_call("PUT", f"{base}/other-bucket", data["accesskey"], "wrong" + data["secretkey"]) == "403"
        assert s3_call("PUT", f"{base}/other-bucket", "unknownkey", data["secretkey"]) == "403"
        assert not (data_dir / "other-bucket").exists()
        assert_test_pod_passes(r, port, ["sts-stackgraph-backup", "sts-elasticsearch-backup"])
        assert (data_dir / "sts-elasticsearch-backup").is_dir(), "the test creates a missing bucket, as the jobs do"
        left = [p.name for p in data_dir.rglob("*") if p.is_file()]
        assert left == [], f"probe objects left behind: {left}"
        bad = run_test_pod(r, port, override_secret="not-the-secret")
        assert bad.returncode != 0 and "cannot reach or create bucket" in bad.stderr, bad.stdout + bad.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@test
def rclone_engine_s3_gateway_runs_as_rendered():
    backend_dir = WORK / "backend"
    backend_dir.mkdir()
    backend_port = free_port()
    backend_keys = ("BACKENDKEY1", "BackendSecretKey1")
    backend = subprocess.Popen([shutil.which("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{backend_port}",
                                "--config", "", "--auth-key", ",".join(backend_keys), str(backend_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = None
    try:
        r = render(sets=set_(**KEYS, **{"minio.s3gateway.enabled": "true",
                                        "minio.s3gateway.provider": "Other",
                                        "minio.s3gateway.serviceEndpoint": f"http://127.0.0.1:{backend_port}",
                                        "minio.s3gateway.accessKey": backend_keys[0],
                                        "minio.s3gateway.secretKey": backend_keys[1]}), keep=False)
        port = free_port()
        gateway, _ = start_storage(r, WORK / "unused", port)
        base = f"http://127.0.0.1:{port}"
        assert s3_call("PUT", f"{base}/sts-elasticsearch-backup",
                       KEYS["minio.accessKey"], KEYS["minio.secretKey"]) == "200"
        assert (backend_dir / "sts-elasticsearch-backup").is_dir(), "bucket did not reach the backend"
        assert s3_call("PUT", f"{base}/x-bucket", KEYS["minio.accessKey"], "wrongwrongwrong") == "403"
        assert_test_pod_passes(r, port, ["sts-stackgraph-backup", "sts-elasticsearch-backup"])
        assert (backend_dir / "sts-stackgraph-backup").is_dir(), "bucket did not reach the backend"
        # negative control: the gateway answers but its backend is gone
        backend.terminate()
        backend.wait(timeout=10)
        down = run_test_pod(r, port)
        assert down.returncode != 0, down.stdout
    finally:
        for p in (gateway, backend):
            if p:
                p.terminate()
                p.wait(timeout=10)




@test
def rclone_engine_azure_gateway_runs_as_rendered():
    blob_port = free_port()
    azurite = subprocess.Popen([shutil.which("azurite-blob"), "--blobHost", "127.0.0.1", "--blobPort", str(blob_port),
                                "-l", str(WORK / "azurite"), "--disableTelemetry", "--skipApiVersionCheck", "-s"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = None
    try:
        endpoint = f"http://127.0.0.1:{blob_port}/{AZURITE_ACCOUNT}"
        r = render(sets=set_(**{"minio.azuregateway.enabled": "true",
                                "minio.azuregateway.serviceEndpoint": endpoint,
                                "minio.accessKey": AZURITE_ACCOUNT, "minio.secretKey": AZURITE_KEY}), keep=False)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", blob_port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        port = free_port()
        gateway, _ = start_storage(r, WORK / "unused", port)
        base = f"http://127.0.0.1:{port}"
        assert s3_call("PUT", f"{base}/sts-stackgraph-backup", AZURITE_ACCOUNT, AZURITE_KEY) == "200"
        assert s3_call("PUT", f"{base}/x-bucket", AZURITE_ACCOUNT, "x" + AZURITE_KEY) == "403"
        containers = subprocess.run([shutil.which("rclone"), "lsd", ":azureblob:", "--config", ""],
                                    env={"PATH": os.environ["PATH"], "HOME": str(WORK),
                                         "RCLONE_AZUREBLOB_ACCOUNT": AZURITE_ACCOUNT,
                                         "RCLONE_AZUREBLOB_KEY": AZURITE_KEY,
                                         "RCLONE_AZUREBLOB_ENDPOINT": endpoint},
                                    capture_output=True, text=True, timeout=60)
        assert "sts-stackgraph-backup" in containers.stdout, containers.stderr
        assert "x-bucket" not in containers.stdout
        assert_test_pod_passes(r, port, ["sts-stackgraph-backup", "sts-elasticsearch-backup"])
    finally:
        for p in (gateway, azurite):
            if p:
                p.terminate()
                p.wait(timeout=10)


def rclone_client(env_extra, *args, **kw):
    env = {"PATH": os.environ["PATH"], "HOME": str(WORK), **env_extra}
    return subprocess.Popen([shutil.which("rclone"), *args, "--config", ""], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, **kw)


def interrupted_multipart_upload(s3_env, key, data_dir, kill_server=None):
    """Starts a slow multipart upload and waits for rclone's hidden part file on the server; kills the
    server (when given) or the client, and returns the leftover's path."""
    src = WORK / "big.bin"
    if not src.exists():
        src.write_bytes(os.urandom(30 * 1024 * 1024))
    before = set(data_dir.rglob(".rclone_temp_multipart_*"))
    client = rclone_client(s3_env, "copyto", str(src), f":s3:{key}", "--s3-upload-cutoff", "5M",
                           "--s3-chunk-size", "5M", "--s3-upload-concurrency", "1", "--bwlimit", "4M",
                           "--retries", "1", "--low-level-retries", "1")
    try:
        for _ in range(200):
            new = set(data_dir.rglob(".rclone_temp_multipart_*")) - before
            if new:
                break
            time.sleep(0.05)
        assert new, "no multipart part file appeared"
        time.sleep(0.5)
        (kill_server or client).kill()
        return new.pop()
    finally:
        client.kill()
        client.wait(timeout=10)


@test
def the_cleanup_sidecar_stops_on_sigterm_as_pid_1():
    """PID 1 ignores signals it has no handler for: without its trap the sidecar would hold every
    storage pod stop for the whole grace period. Run the rendered script as PID 1 of a new PID
    namespace (unshare, as root) and send SIGTERM to it alone."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        raise AssertionError("this check needs root and unshare (util-linux) to run a PID namespace")
    r = render(sets=set_(**KEYS))
    dep, _, _ = storage(r)
    side = container(dep, "multipart-cleanup")
    env = {"PATH": os.environ["PATH"], "CLEANUP_INTERVAL_SECONDS": "600", "CLEANUP_MIN_AGE": "24h",
           "CLEANUP_ROOTS": str(WORK / "no-such-root")}
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", *side["command"]], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        shell = None
        for _ in range(100):  # the shell inside the namespace: unshare's only child
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            pids = children.read_text().split() if children.exists() else []
            if pids:
                shell = int(pids[0])
                break
            time.sleep(0.05)
        assert shell, "the sidecar's shell did not start"
        time.sleep(0.5)  # past the trap, into the sleep
        os.kill(shell, signal.SIGTERM)
        proc.wait(timeout=3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("the sidecar ignored SIGTERM as PID 1")


@test
def rclone_multipart_leftovers_are_cleaned_by_the_rendered_sidecar():
    r = render(sets=set_(**KEYS), keep=False)
    dep, _, _ = storage(r)
    side = container(dep, "multipart-cleanup")
    data_dir = WORK / "cleanup-export"
    data_dir.mkdir()
    port = free_port()
    s3_env = {"RCLONE_S3_PROVIDER": "Other", "RCLONE_S3_ENDPOINT": f"http://127.0.0.1:{port}",
              "RCLONE_S3_ACCESS_KEY_ID": KEYS["minio.accessKey"], "RCLONE_S3_SECRET_ACCESS_KEY": KEYS["minio.secretKey"]}
    server, _ = start_storage(r, data_dir, port)
    cleanup = None
    try:
        bucket = data_dir / "sts-stackgraph-backup"
        assert s3_call("PUT", f"http://127.0.0.1:{port}/sts-stackgraph-backup", *KEYS.values()) == "200"
        # an ordinary backup, three days old: must survive (the filter, not the age, protects it)
        rclone_client(s3_env, "rcat", ":s3:sts-stackgraph-backup/old.graph", stdin=subprocess.PIPE).communicate(b"x")
        three_days = time.time() - 3 * 86400
        os.utime(bucket / "old.graph", (three_days, three_days))
        # the server dies mid-upload: its part file stays, invisible to S3 listings
        stale = interrupted_multipart_upload(s3_env, "sts-stackgraph-backup/dead.graph", data_dir, kill_server=server)
        server.wait(timeout=10)
        os.utime(stale, (three_days, three_days))
        server, _ = start_storage(r, data_dir, port)  # the pod restarts
        assert "dead.graph" not in rclone_client_ls(s3_env, port)
        # a part file written a moment ago (an upload still running, as far as anyone can tell)
        fresh = interrupted_multipart_upload(s3_env, "sts-stackgraph-backup/live.graph", data_dir)
        assert stale.exists() and fresh.exists()
        # run the sidecar's command as rendered, /export being the data dir
        env = resolve_env(side, r)
        tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="cleanup."))
        argv = [a.replace("/tmp/", f"{tmp}/") for a in side["command"]]
        env = {"PATH": os.environ["PATH"], **env, "HOME": str(tmp),
               "CLEANUP_ROOTS": env["CLEANUP_ROOTS"].replace("/export", str(data_dir))}
        log = open(WORK / "cleanup.log", "w")
        cleanup = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(200):
            if not stale.exists():
                break
            time.sleep(0.05)
        assert not stale.exists(), (WORK / "cleanup.log").read_text()
        assert fresh.exists(), "a part file younger than olderThan was deleted"
        assert (bucket / "old.graph").exists(), "an ordinary object was deleted"
        # rclone logs the delete after doing it: give the line a moment to reach the file
        for _ in range(100):
            if "Deleted" in (WORK / "cleanup.log").read_text():
                break
            time.sleep(0.05)
        assert "Deleted" in (WORK / "cleanup.log").read_text(), (WORK / "cleanup.log").read_text()
    finally:
        if cleanup:
            os.killpg(cleanup.pid, signal.SIGTERM)
            cleanup.wait(timeout=10)
        server.terminate()
        server.wait(timeout=10)


def server_reads(proc):
    """Bytes the process has read so far (files and sockets alike: /proc/PID/io rchar)."""
    return int(re.search(r"^rchar: (\d+)$", Path(f"/proc/{proc.pid}/io").read_text(), re.M).group(1))


def reads_per_request(r, data_dir, port):
    """Serves data_dir the way `r` renders the storage, writes a 32 MiB object through it in
    parts (as a backup does) and returns the bytes the server read for one HEAD, one GET and
    one listing of it, each in a restarted server: a restore comes days later, when rclone has
    long forgotten the hashes it saw."""
    size = 32 * 1024 * 1024
    s3_env = {"RCLONE_S3_PROVIDER": "Other", "RCLONE_S3_ENDPOINT": f"http://127.0.0.1:{port}",
              "RCLONE_S3_ACCESS_KEY_ID": KEYS["minio.accessKey"], "RCLONE_S3_SECRET_ACCESS_KEY": KEYS["minio.secretKey"]}
    url = f"http://127.0.0.1:{port}/sts-stackgraph-backup"
    server, _ = start_storage(r, data_dir, port)
    try:
        assert s3_call("PUT", url, *KEYS.values()) == "200"
        upload = rclone_client(s3_env, "rcat", "--s3-chunk-size", "5Mi", ":s3:sts-stackgraph-backup/big.graph",
                               stdin=subprocess.PIPE)
        upload.communicate(os.urandom(size))
        assert upload.wait(timeout=60) == 0
        reads = {}
        for what, method, target in (("HEAD", "HEAD", f"{url}/big.graph"), ("GET", "GET", f"{url}/big.graph"),
                                     ("LIST", "GET", f"{url}?list-type=2")):
            server.terminate()
            server.wait(timeout=10)
            server, _ = start_storage(r, data_dir, port)  # the container restarts; /tmp stays
            before = server_reads(server)
            assert s3_call(method, target, *KEYS.values()) == "200", what
            reads[what] = server_reads(server) - before
        return size, reads
    finally:
        server.terminate()
        server.wait(timeout=10)


@test
def rclone_volume_reads_each_object_once_per_get_and_never_for_head_or_list():
    # Plain files have no stored MD5: rclone would read the whole backup for every HEAD, GET and
    # listing (a `list` of 30 backups of 100 GiB would read 3 TB). The rendered server computes
    # it during the upload and keeps it.
    r = render(sets=set_(**KEYS), keep=False)
    _, c, _ = storage(r)
    assert c["args"][-1] == ":hasher,remote=/export:"
    data_dir = WORK / "reads-export"
    data_dir.mkdir()
    size, reads = reads_per_request(r, data_dir, free_port())
    assert reads["HEAD"] < 1024 * 1024 and reads["LIST"] < 1024 * 1024, reads
    assert size <= reads["GET"] < size + 1024 * 1024, reads
    # negative control: the same server on the plain volume reads the object for each request
    plain = Rendered(json.loads(json.dumps(r.docs)))
    plain_c = container(plain.one("Deployment", "minio"), STORAGE_CONTAINER)
    plain_c["args"][-1] = "/export"
    plain_dir = WORK / "reads-export-plain"
    plain_dir.mkdir()
    size, reads = reads_per_request(plain, plain_dir, free_port())
    assert reads["HEAD"] >= size and reads["LIST"] >= size and reads["GET"] >= 2 * size, reads


def readme_migration_pod():
    """The migration pod of chart/README.md ("Switching engines"), as a user would apply it."""
    text = (CHART / "README.md").read_text()
    block = text.split("<!-- migration-pod:", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(block)


def stackgraph_backup(port, *args, check=True):
    env = {"PATH": os.environ["PATH"], "HOME": str(WORK), "BACKUP_STORAGE": "s3://sts-stackgraph-backup",
           "S3_ENDPOINT": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": KEYS["minio.accessKey"],
           "AWS_SECRET_ACCESS_KEY": KEYS["minio.secretKey"], "LOG_FORMAT": "text"}
    proc = subprocess.run([str(ROOT / "target" / "debug" / "stackgraph-backup"), *args], env=env,
                          capture_output=True, text=True, timeout=120)
    assert not check or proc.returncode == 0, (args, proc.returncode, proc.stderr[-2000:])
    return proc


@test
def readme_migration_moves_backups_to_the_rclone_engine():
    """Runs the README's engine switch against real servers: backups made by stackgraph-backup on the
    old server (MinIO is not obtainable here: a second `rclone serve s3` stands in for it; the pod
    only speaks S3 to it), the README's migration pod, the chart's rclone engine on the new volume,
    then `stackgraph-backup list` / `verify` through it."""
    old_dir, new_dir = WORK / "migrate-old", WORK / "migrate-new"
    old_dir.mkdir()
    new_dir.mkdir()
    old_port = free_port()
    old = subprocess.Popen([shutil.which("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{old_port}", "--config", "",
                            "--auth-key", ",".join(KEYS.values()), str(old_dir)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    new = None
    try:
        wait_port(old_port, old, "old server")
        for name in ("sts-backup-20260101-0300.graph", "sts-backup-20260102-0300.graph"):
            stackgraph_backup(old_port, "backup", "--create-bucket", "--name-template", name, "--",
                              "sh", "-c", "head -c 7340032 /dev/urandom")
        s3_call("PUT", f"http://127.0.0.1:{old_port}/sts-elasticsearch-backup", *KEYS.values())
        before = json.loads(stackgraph_backup(old_port, "list", "-o", "json").stdout)
        assert len(before["backups"] if isinstance(before, dict) else before) == 2, before

        # the README's pod, with the Secret of a release named sts-backup
        r = render(sets=set_(**KEYS), release="sts-backup", keep=False)
        pod = readme_migration_pod()
        c = container(pod)
        env = resolve_env(c, r)
        assert env["RCLONE_S3_ENDPOINT"] == "http://sts-backup-minio:9000"
        env["RCLONE_S3_ENDPOINT"] = f"http://127.0.0.1:{old_port}"  # what the Service name resolves to
        tmp = Path(tempfile.mkdtemp(dir=WORK, prefix="migrate."))
        assert {m["mountPath"] for m in c["volumeMounts"]} == {"/target", "/tmp"}
        argv = [a.replace("/tmp/", f"{tmp}/").replace("/target/", f"{new_dir}/") for a in c["command"]]
        proc = subprocess.run(argv, env={"PATH": os.environ["PATH"], **env, "HOME": str(tmp)},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (new_dir / "sts-elasticsearch-backup").is_dir(), "an empty bucket was not carried over"

        # step 3: the upgrade values; the rclone engine serves the new volume
        r = render(sets=set_(**KEYS, **{"minio.engine": "rclone",
                                        "minio.persistence.existingClaim": "sts-backup-minio-rclone"}),
                   release="sts-backup", keep=False)
        assert volumes_of(r.one("Deployment", "minio"))["export"]["persistentVolumeClaim"]["claimName"] == \
            "sts-backup-minio-rclone"
        new_port = free_port()
        new, _ = start_storage(r, new_dir, new_port)
        after = json.loads(stackgraph_backup(new_port, "list", "-o", "json").stdout)
        assert after == before, (before, after)
        names = [b["name"] for b in (after["backups"] if isinstance(after, dict) else after)]
        for name in names:
            stackgraph_backup(new_port, "verify", name)
        # negative control: verify does look at the copied bytes
        data = next(p for p in (new_dir / "sts-stackgraph-backup").rglob(names[0] + "*") if p.stat().st_size > 1 << 20)
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
        assert stackgraph_backup(new_port, "verify", names[0], check=False).returncode == 4
    finally:
        for p in (new, old):
            if p:
                p.terminate()
                p.wait(timeout=10)


def rclone_client_ls(s3_env, port):
    proc = subprocess.run([shutil.which("rclone"), "lsf", "-R", ":s3:sts-stackgraph-backup", "--config", ""],
                          env={"PATH": os.environ["PATH"], "HOME": str(WORK), **s3_env},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


# ------------------------------------------------------------------------------------------


def main():
    tests = list(TESTS)
    # validation runs last, over everything the other tests rendered
    tests = [t for t in tests if not t.__name__.startswith("kubernetes_validate_strict")]
    tests += [make_k8s_validation_test(v) for v in K8S_VERSIONS]
    if len(sys.argv) > 1:  # run.sh NAME...: only the tests whose name contains one of the words
        tests = [t for t in tests if any(word in t.__name__ for word in sys.argv[1:])]
    passed = failed = 0
    for fn in tests:
        started = time.monotonic()
        try:
            fn()
        except Exception:  # noqa: BLE001 - every failure is reported, the run goes on
            failed += 1
            print(f"FAIL {fn.__name__} ({time.monotonic() - started:.1f}s)")
            print("  " + traceback.format_exc().strip().replace("\n", "\n  "))
        else:
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - started:.1f}s)")
    shutil.rmtree(WORK, ignore_errors=True)
    print(f"chart: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
