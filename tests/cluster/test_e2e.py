"""End to end on the cluster double: the real helm installs the chart, the real kubectl starts the
StackGraph backup from its CronJob, pods run in containers built from the product's images, and the
restore scripts (scripts/restore/*.sh) drive the restore with the real kubectl.

Graph server: a real etcd on 127.0.0.1 (Debian's); the backup pod runs `etcdctl snapshot save`
inside the etcd stand-in image, through the stackgraph-backup binary its init container injected.
Storage: the chart's rclone Deployment (local PVC mode) in the rclone image.
"""

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import unittest
import urllib.request

import images
from harness import ROOT, Cluster
from test_apiserver import wait_for
from test_images import ETCD, JOBS, RCLONE

NS = "sts"
VALUES = [os.path.join(ROOT, "tests/e2e/values", f) for f in ("common.yaml", "local.yaml", "etcd.yaml", "cluster.yaml")]
WRITER = {"apiVersion": "apps/v1", "kind": "Deployment",
          "metadata": {"name": "graph-writer", "namespace": NS,
                       "labels": {"stackstate.com/connects-to-stackgraph": "true"}},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "graph-writer"}}, "template": {
              "metadata": {"labels": {"app": "graph-writer"}},
              "spec": {"terminationGracePeriodSeconds": 2, "containers": [{
                  "name": "writer", "image": ETCD, "command": ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"],
                  "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
                                      "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}}}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_etcd(data_dir, log):
    client, peer = free_port(), free_port()
    proc = subprocess.Popen(["etcd", "--name", "default", "--data-dir", data_dir,
                             "--listen-client-urls", f"http://127.0.0.1:{client}",
                             "--advertise-client-urls", f"http://127.0.0.1:{client}",
                             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                             "--initial-cluster", f"default=http://127.0.0.1:{peer}"],
                            stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{client}"
    wait_for(lambda: subprocess.run(["etcdctl", "--endpoints", endpoint, "endpoint", "health"],
                                    capture_output=True, env=dict(os.environ, ETCDCTL_API="3")).returncode == 0,
             30, "etcd")
    return proc, endpoint


def fill_etcd(endpoint, count):
    """`count` keys of graph-like JSON values."""
    env = dict(os.environ, ETCDCTL_API="3")
    for i in range(count):
        subprocess.run(["etcdctl", "--endpoints", endpoint, "put", f"/registry/vertices/{i:04d}",
                        json.dumps({"id": i, "blob": hashlib.md5(str(i).encode()).hexdigest()})],
                       check=True, capture_output=True, env=env)


def etcd_digest(endpoint):
    out = subprocess.run(["etcdctl", "--endpoints", endpoint, "get", "", "--prefix"], capture_output=True,
                         text=True, check=True, env=dict(os.environ, ETCDCTL_API="3")).stdout
    return hashlib.sha256(out.encode()).hexdigest(), out.count("\n") // 2


def start_graph(cls, prefix, keys):
    """The images, a work dir and the etcd graph server with `keys` keys, as class attributes
    (work, etcd_log, etcd, endpoint); stop_graph undoes it."""
    images.build_jobs_image(JOBS)
    images.build_rclone_image(RCLONE)
    images.build_etcd_image(ETCD)
    cls.work = tempfile.mkdtemp(prefix=prefix)
    cls.etcd_log = open(os.path.join(cls.work, "etcd.log"), "w", encoding="utf-8")  # noqa: SIM115
    cls.etcd, cls.endpoint = start_etcd(os.path.join(cls.work, "etcd-data"), cls.etcd_log)
    fill_etcd(cls.endpoint, keys)


def stop_graph(cls):
    cls.etcd.terminate()
    cls.etcd.wait()
    cls.etcd_log.close()
    shutil.rmtree(cls.work, ignore_errors=True)


class StackGraphEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        start_graph(cls, "sts-e2e-cluster-", 200)
        cls.c = Cluster("1.34", kubelet=True)
        c = cls.c
        c.kubectl("create", "namespace", NS)
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "etcd-restore", "namespace": NS},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        c.kubectl("create", "-f", "-", input=json.dumps(pvc))
        c.kubectl("create", "-f", "-", input=json.dumps(WRITER))
        cls.extra_env = json.dumps([{"name": "ETCDCTL_API", "value": "3"},
                                    {"name": "ETCDCTL_ENDPOINTS", "value": cls.endpoint}])
        cls.monitor_port = free_port()
        cls.install = c.helm("install", "r", os.path.join(ROOT, "chart"), "-n", NS,
                             *[a for f in VALUES for a in ("-f", f)],
                             "--set-json", f"backup.stackGraph.extraEnv={cls.extra_env}",
                             # The kubelet runs pods on the host network: a free port, checks every 2 s.
                             "--set", f"backup.monitor.port={cls.monitor_port}",
                             "--set", "backup.monitor.interval=2s",
                             "--wait", "--timeout", "120s")

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        stop_graph(cls)

    def script(self, name, *args, check=False):
        return self.c.run("bash", os.path.join(ROOT, "scripts", "restore", name), "-n", NS, *args, check=check,
                          timeout=300)

    def replicas(self):
        d = json.loads(self.c.kubectl("get", "deploy", "graph-writer", "-n", NS, "-o", "json").stdout)
        return d["spec"]["replicas"], d["status"].get("readyReplicas", 0)

    def test_backup_list_restore_refuse(self):
        c = self.c
        self.assertNotIn("unknown field", self.install.stderr)
        wait_for(lambda: self.replicas() == (2, 2), 60, "the writers to run")
        # the chart's storage pod runs all its containers without restarts (server and cleanup loop)
        pods = json.loads(c.kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=minio", "-o",
                                    "json").stdout)["items"]
        self.assertEqual(len(pods), 1)
        for cs in pods[0]["status"]["containerStatuses"]:
            self.assertIn("running", cs["state"], cs)
            self.assertEqual(cs["restartCount"], 0, cs)
        # 1. the scheduled backup, started by hand from its CronJob
        c.kubectl("create", "job", "--from=cronjob/r-sts-backup-stackgraph-backup", "manual-backup", "-n", NS)
        p = c.kubectl("wait", "job/manual-backup", "-n", NS, "--for=condition=complete", "--timeout=180s",
                      check=False, timeout=200)
        logs = c.kubectl("logs", "job/manual-backup", "-n", NS, "-c", "backup", check=False).stdout
        self.assertEqual(p.returncode, 0, f"backup job did not complete:\n{p.stderr}\n{logs}")
        # 2. list with the real kubectl
        p = self.script("list-stackgraph-backups.sh", "-o", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        rows = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("[")][0])
        self.assertEqual(len(rows), 1, rows)
        name = rows[0]["name"]
        # 3. restore into the empty target; the writers go to 0 during it and come back to 2
        source = etcd_digest(self.endpoint)
        seen = []
        watcher = subprocess.Popen(["kubectl", "get", "deploy", "graph-writer", "-n", NS, "-w", "-o",
                                    "jsonpath={.spec.replicas}{\"\\n\"}", "--request-timeout=280s"],
                                   stdout=subprocess.PIPE, text=True, env=c.env)
        p = self.script("restore-stackgraph-backup.sh", name)
        watcher.terminate()
        seen = watcher.communicate()[0].split()
        self.assertEqual(p.returncode, 0, f"{p.stdout}\n{p.stderr}")
        self.assertIn("0", seen, f"the writers were never scaled down: {seen}")
        self.assertEqual(self.replicas()[0], 2)
        restored_dir = os.path.join(c.dir, "kubelet", "pvcs", NS, "etcd-restore", "data")
        self.assertTrue(os.path.isdir(restored_dir), "no restored etcd data dir in the PVC")
        copy = os.path.join(self.work, "restored")
        shutil.copytree(restored_dir, copy)
        with open(os.path.join(self.work, "etcd-restored.log"), "w", encoding="utf-8") as log:
            proc, endpoint = start_etcd(copy, log)
            try:
                self.assertEqual(etcd_digest(endpoint), source)
            finally:
                proc.terminate()
                proc.wait()
        # 4. a second restore into the now non-empty target is refused (exit 3), writers untouched
        p = self.script("restore-stackgraph-backup.sh", name)
        self.assertEqual(p.returncode, 3, f"{p.stdout}\n{p.stderr}")
        self.assertEqual(self.replicas()[0], 2)

    def metric(self, line_prefix):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(line_prefix + " "):
                return float(line.split()[-1])
        return None

    def test_the_monitor_sees_the_backup_and_then_the_missed_schedule(self):
        """Issue 16 end to end: the monitor Deployment (our image, in a container) reads the bucket
        the backup Job wrote; with the CronJob suspended and the monitor's clock moved a day and a
        half ahead, the store is reported overdue."""
        c = self.c
        committed = 'sts_backup_backups{store="stackgraph",state="committed"}'
        listed = self.script("list-stackgraph-backups.sh", "-o", "json", check=True).stdout
        if not json.loads([ln for ln in listed.splitlines() if ln.startswith("[")][0]):
            c.kubectl("create", "job", "--from=cronjob/r-sts-backup-stackgraph-backup", "monitor-backup", "-n", NS)
            p = c.kubectl("wait", "job/monitor-backup", "-n", NS, "--for=condition=complete", "--timeout=180s",
                          check=False, timeout=200)
            self.assertEqual(p.returncode, 0, p.stderr)
        wait_for(lambda: (self.metric(committed) or 0) >= 1, 90, "the monitor to count the backup")
        self.assertEqual(self.metric('sts_backup_overdue{store="stackgraph"}'), 0)
        self.assertEqual(self.metric('sts_backup_storage_up{store="stackgraph"}'), 1)
        # Backups stop: the CronJob is suspended, and time passes (the monitor's clock moves 36 h).
        c.kubectl("patch", "cronjob", "r-sts-backup-stackgraph-backup", "-n", NS, "--type=merge",
                  "-p", '{"spec":{"suspend":true}}')
        deploy = "deployment/r-sts-backup-monitor"
        c.kubectl("scale", deploy, "-n", NS, "--replicas=0")
        wait_for(lambda: self.metric(committed) is None, 60, "the old monitor pod to stop")
        c.kubectl("set", "env", deploy, "-n", NS, "MONITOR_CLOCK_OFFSET=36h")
        c.kubectl("scale", deploy, "-n", NS, "--replicas=1")
        wait_for(lambda: self.metric('sts_backup_overdue{store="stackgraph"}') == 1, 90,
                 "the monitor to report the store overdue")

    def test_operator_without_create_on_jobs_gets_the_403(self):
        """Negative control of the operator's minimal Role (scripts/restore/operator-role.yaml, with
        which test_orchestrate.py runs every restore): without `create` on jobs the script fails
        and the API's 403 names the verb and resource; nothing was started."""
        c = self.c
        with open(os.path.join(ROOT, "scripts", "restore", "operator-role.yaml"), encoding="utf-8") as f:
            role = f.read()
        self.assertIn("verbs: [create, get, delete]", role)
        c.kubectl("create", "serviceaccount", "operator", "-n", NS)
        c.kubectl("apply", "-n", NS, "-f", "-", input=role.replace("verbs: [create, get, delete]", "verbs: [get, delete]"))
        c.kubectl("create", "rolebinding", "operator", "-n", NS, "--role=sts-backup-operator",
                  f"--serviceaccount={NS}:operator")
        jobs_before = c.kubectl("get", "jobs", "-n", NS, "-o", "name").stdout
        kc = c.token_kubeconfig(NS, "operator")
        p = c.run("bash", os.path.join(ROOT, "scripts", "restore", "restore-stackgraph-backup.sh"), "-n", NS,
                  "--latest", "-force", kubeconfig=kc, check=False, timeout=300)
        self.assertEqual(p.returncode, 1, f"{p.stdout}\n{p.stderr}")
        self.assertIn('cannot create resource "jobs" in API group "batch"', p.stderr)
        self.assertEqual(c.kubectl("get", "jobs", "-n", NS, "-o", "name").stdout, jobs_before)


if __name__ == "__main__":
    unittest.main()

