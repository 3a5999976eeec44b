"""The Elasticsearch side end to end on the cluster double: the real helm installs the chart with
its Elasticsearch parts on, the post-install hook's es-snapshot-register Job runs in a container
from the jobs image against the fake Elasticsearch (the testkit's `fake-es`, every request checked
against the official ES API spec) and registers the repository and the SLM policy; the real
kubectl then runs scripts/restore/list-elasticsearch-snapshots.sh and
restore-elasticsearch-snapshot.sh, whose Jobs run in containers too.

What is real: helm, kubectl, the chart, the jobs image, the storage Deployment (`rclone serve s3`
on its PVC) which holds the repository's bucket — the fake's S3 repository reads and writes it
there, reaching the storage Service's name through a host alias, as an Elasticsearch node would
through the cluster's DNS. What is a double: the API server and kubelet (tests/cluster), and
Elasticsearch (jobs/testkit/src/fake_es).

Elasticsearch is 7.17 with `-Des.allow_insecure_settings=true` and the chart's default `inline`
credentials (StackState 5.1's setup). Its Service name resolves to 127.0.0.1 in the pods
(the kubelet's --add-host for every Service), on the fake's own port.
"""

import json
import os
import subprocess
import time
import unittest

import images
from harness import ROOT, Cluster
from test_apiserver import wait_for
from test_e2e import free_port
from test_images import ETCD, JOBS, RCLONE
from test_modes import STORAGE_PORT, port_open, values_file

NS = "es"
RELEASE = "r"
REPO = "sts-backup"
SNAPSHOT = "sts-backup-20261120-0300-ppss8nx40yk"
INDICES = ["sts_topology_1", "sts_events_1"]
ES_SERVICE = "stackstate-elasticsearch-master-headless"
SCALE_LABEL = "observability.suse.com/scalable-during-es-restore"
ORCHESTRATE_ROLE = f"{RELEASE}-sts-backup-orchestrate"
SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
WRITER = {"apiVersion": "apps/v1", "kind": "Deployment",
          "metadata": {"name": "es-writer", "namespace": NS, "labels": {SCALE_LABEL: "true"}},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "es-writer"}}, "template": {
              "metadata": {"labels": {"app": "es-writer"}},
              "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                  "name": "writer", "image": ETCD, "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                  "securityContext": SECURITY}]}}}}


def fake_es_binary():
    """The testkit's fake-es, built in debug (tests/cluster/run.sh builds it; STS_FAKE_ES names
    another build)."""
    path = os.environ.get("STS_FAKE_ES") or os.path.join(ROOT, "target", "debug", "fake-es")
    if not os.access(path, os.X_OK):
        raise AssertionError(f"{path} not found: cargo build -p sts-backup-testkit --bin fake-es")
    return path


class FakeElasticsearch:
    """The fake-es process; `call` sends one command on its stdin and reads the answer."""

    def __init__(self, log_path, *args):
        self.log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115  closed in stop()
        self.proc = subprocess.Popen([fake_es_binary(), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        first = self.proc.stdout.readline()
        if not first.startswith("listening "):
            raise AssertionError(f"fake-es did not start: {first!r}")
        self.url = first.split()[1]
        self.port = int(self.url.rsplit(":", 1)[1])

    def call(self, cmd, **args):
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        if isinstance(answer, dict) and "error" in answer:
            raise AssertionError(f"fake-es {cmd}: {answer['error']}")
        return answer

    def stop(self):
        """Ends the fake; the spec violations it saw, if any, fail the caller."""
        violations = self.call("violations")
        self.proc.stdin.close()
        self.proc.wait(timeout=15)
        self.log.close()
        return violations


class ElasticsearchEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        images.build_jobs_image(JOBS)
        images.build_rclone_image(RCLONE)
        images.build_etcd_image(ETCD)  # the writer's image
        wait_for(lambda: not port_open(STORAGE_PORT), 300,
                 f"127.0.0.1:{STORAGE_PORT} to be free (another storage service of a cluster test runs)")
        cls.c = c = Cluster("1.34", kubelet=True)
        cls.es = None
        try:
            cls.es = FakeElasticsearch(os.path.join(c.dir, "fake-es.log"), "--version", "7.17.18",
                                       "--allow-insecure-settings", "--alias", f"{RELEASE}-minio=127.0.0.1")
            c.kubectl("create", "namespace", NS)
            # Elasticsearch's Service: the pods resolve its name to the host, where the fake listens
            c.kubectl("create", "service", "clusterip", ES_SERVICE, "-n", NS, f"--tcp={cls.es.port}:{cls.es.port}")
            c.kubectl("create", "-f", "-", input=json.dumps(WRITER))
            cls.install = c.helm(
                "install", RELEASE, os.path.join(ROOT, "chart"), "-n", NS,
                *[a for f in ("common.yaml", "local.yaml", "etcd.yaml", "cluster.yaml") for a in ("-f", values_file(f))],
                "--set", f"backup.elasticsearch.endpoint=http://{ES_SERVICE}:{cls.es.port}",
                "--set", "backup.elasticsearch.restore.enabled=true",
                "--set", "backup.elasticsearch.scheduled.enabled=true",
                "--set", "backup.stackGraph.scheduled.enabled=false",
                "--set", f"backup.monitor.port={free_port()}",
                "--wait", "--timeout", "180s", timeout=240)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        violations = cls.es.stop() if cls.es else []
        cls.c.stop()
        if violations:
            raise AssertionError("the fake Elasticsearch saw requests the spec does not allow:\n" + "\n".join(violations))

    # ---- helpers ------------------------------------------------------------------------------

    def script(self, name, *args, kubeconfig=None):
        return self.c.run("bash", os.path.join(ROOT, "scripts", "restore", name), "-n", NS, *args, check=False,
                          timeout=300, kubeconfig=kubeconfig)

    def writer(self):
        """(spec.replicas, ready, metadata.generation) of the writer Deployment."""
        d = json.loads(self.c.kubectl("get", "deploy", "es-writer", "-n", NS, "-o", "json").stdout)
        return d["spec"]["replicas"], d.get("status", {}).get("readyReplicas", 0), d["metadata"]["generation"]

    def seed(self):
        """The snapshot in the repository's bucket (idempotent: once per class)."""
        if not getattr(type(self), "seeded", False):
            self.es.call("seed_snapshot", repo=REPO, name=SNAPSHOT, start_ms=1_763_607_600_000, indices=INDICES,
                         data_streams=[])
            type(self).seeded = True

    def live_indices(self):
        """The snapshot's indices, live and open in the cluster: a restore would overwrite them."""
        for index in INDICES:
            self.es.call("add_index", name=index, open=True)

    def setUp(self):
        wait_for(lambda: self.writer()[:2] == (2, 2), 90, "the writer back at 2 ready replicas")
        self.seed()
        self.es.call("clear_log")

    # ---- scenarios -----------------------------------------------------------------------------

    def test_a_hook_registered_repository_and_policy_in_the_storage_bucket(self):
        """The post-install hook ran in a container: the repository points at the storage
        Service with the chart's keys, and its bucket exists in the storage pod's volume."""
        self.assertNotIn("unknown field", self.install.stderr)
        repo = self.es.call("repository", name=REPO)
        self.assertIsNotNone(repo, "the es-register hook did not register the repository")
        settings = repo["settings"]
        self.assertEqual(settings["bucket"], "sts-elasticsearch-backup")
        self.assertIn(f"{RELEASE}-minio:9000", settings["endpoint"])
        self.assertEqual(settings["access_key"], "e2eAccessKey1")
        bucket = os.path.join(self.c.dir, "kubelet", "pvcs", NS, f"{RELEASE}-minio", "sts-elasticsearch-backup")
        self.assertTrue(os.path.isdir(bucket), "the hook did not create the bucket in the storage service")
        # the seeded snapshot went through the fake's S3 client into that bucket
        self.assertTrue(os.path.exists(os.path.join(bucket, "index.latest")), os.listdir(bucket))
        hook = json.loads(self.c.kubectl("get", "jobs", "-n", NS, "-l", "app.kubernetes.io/component=es-register",
                                         "-o", "json").stdout)["items"]
        self.assertEqual([j["status"].get("succeeded") for j in hook], [1])

    def test_b_list_shows_the_snapshot(self):
        p = self.script("list-elasticsearch-snapshots.sh", "-o", "json")
        self.assertEqual(p.returncode, 0, f"{p.stdout}\n{p.stderr}")
        rows = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("[")][0])
        self.assertEqual([(r["name"], r["indices"]) for r in rows], [(SNAPSHOT, len(INDICES))])

    def test_c_restore_over_live_indices_is_refused_and_changes_nothing(self):
        self.live_indices()
        before = self.writer()
        p = self.script("restore-elasticsearch-snapshot.sh", SNAPSHOT)
        self.assertEqual(p.returncode, 3, f"{p.stdout}\n{p.stderr}")
        self.assertIn("Not restored, nothing changed", p.stderr)
        # nothing deleted, closed, opened, rolled over or restored; the writer never scaled
        self.assertEqual(self.es.call("destructive"), [])
        self.assertEqual(self.es.call("indices"), {i: True for i in INDICES})
        self.assertEqual(self.writer(), before)

    def test_d_forced_restore_scales_the_writer_down_and_back(self):
        self.live_indices()
        seen = subprocess.Popen(["kubectl", "get", "deploy", "es-writer", "-n", NS, "-w", "-o",
                                 "jsonpath={.spec.replicas}{\"\\n\"}", "--request-timeout=280s"],
                                stdout=subprocess.PIPE, text=True, env=self.c.env)
        p = self.script("restore-elasticsearch-snapshot.sh", SNAPSHOT, "-force")
        time.sleep(1)  # the scale-up's watch event
        seen.terminate()
        values = seen.communicate()[0].split()
        changes = [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]
        self.assertEqual(p.returncode, 0, f"{p.stdout}\n{p.stderr}")
        self.assertEqual(changes, ["2", "0", "2"])
        done = [(r["method"], r["endpoint"]) for r in self.es.call("destructive")]
        self.assertIn(("POST", "indices.close"), done)
        self.assertIn(("POST", "snapshot.restore"), done)
        self.assertEqual(self.es.call("indices"), {i: True for i in INDICES})

    def test_e_role_without_patch_on_deployments_fails_the_forced_restore_with_the_403(self):
        """Negative control of the orchestration Role: `patch` taken from deployments. The Job
        cannot scale the writer down: the restore fails before any destructive request, naming
        the 403, and the writer keeps its replicas."""
        c = self.c
        self.live_indices()
        original = json.loads(c.kubectl("get", "role", ORCHESTRATE_ROLE, "-n", NS, "-o", "json").stdout)
        broken = json.loads(json.dumps(original))
        rules = []
        for rule in broken["rules"]:
            if "deployments" in rule["resources"] and "patch" in rule["verbs"]:
                rules.append(dict(rule, resources=[r for r in rule["resources"] if r != "deployments"]))
                rules.append(dict(rule, resources=["deployments"], verbs=[v for v in rule["verbs"] if v != "patch"]))
            else:
                rules.append(rule)
        broken["rules"] = [r for r in rules if r["resources"]]
        c.kubectl("replace", "-f", "-", input=json.dumps(broken))
        before = self.writer()
        try:
            p = self.script("restore-elasticsearch-snapshot.sh", SNAPSHOT, "-force")
        finally:
            original["metadata"].pop("resourceVersion", None)
            c.kubectl("replace", "-f", "-", input=json.dumps(original))
        self.assertNotEqual(p.returncode, 0, f"{p.stdout}\n{p.stderr}")
        self.assertIn('cannot patch resource "deployments" in API group "apps"', p.stdout + p.stderr)
        self.assertEqual(self.es.call("destructive"), [])
        self.assertEqual(self.writer(), before)


if __name__ == "__main__":
    unittest.main()
