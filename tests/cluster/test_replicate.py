"""Off-site copies on the cluster double (issue 18, item 4): the chart installed with the real helm
with StackGraph's replicate CronJob pointed at a second S3 server on the host (`rclone serve s3`,
its own port, bucket and keys, the keys from a Secret); a backup taken, the replicate CronJob run as
a Job in a container from the product's jobs image, and the copy listed through the restore script
with `-replica` (the `-replica` Job template: the copy's storage env and only the copy's keys). The
control: before the replicate Job ran, the same `-replica` listing is empty while the primary's
shows the backup.
"""

import json
import os
import socket
import subprocess
import unittest

from harness import ROOT, Cluster
from test_apiserver import wait_for
from test_e2e import free_port, start_graph, stop_graph

NS = "offsite"
RELEASE = "r"
E2E_VALUES = os.path.join(ROOT, "tests/e2e/values")
VALUES = [os.path.join(E2E_VALUES, f) for f in ("common.yaml", "local.yaml", "etcd.yaml", "cluster.yaml")]
OFFSITE_BUCKET = "sts-offsite-stackgraph"
OFFSITE_KEYS = ("offsiteAccess1", "offsiteSecret1234567890")


def start_offsite(work):
    """A second S3 server on the host (another "provider"): rclone serve s3 with its own keys."""
    root = os.path.join(work, "offsite")
    os.makedirs(os.path.join(root, OFFSITE_BUCKET))
    port = free_port()
    log = open(os.path.join(work, "offsite.log"), "w", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(["rclone", "serve", "s3", "--addr", f"127.0.0.1:{port}",
                             "--auth-key", ",".join(OFFSITE_KEYS), root], stdout=log, stderr=log)
    def up():
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(up, 30, "the off-site rclone to listen")
    return proc, log, port, os.path.join(root, OFFSITE_BUCKET)


class OffsiteCopy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        start_graph(cls, "sts-offsite-", 150)
        cls.offsite, cls.offsite_log, port, cls.offsite_dir = start_offsite(cls.work)
        cls.c = c = Cluster("1.34", kubelet=True)
        c.kubectl("create", "namespace", NS)
        # tests/e2e/values/etcd.yaml's restore target (a volume the store's pods mount)
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "etcd-restore", "namespace": NS},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        c.kubectl("create", "-f", "-", input=json.dumps(pvc))
        c.kubectl("create", "secret", "generic", "offsite-credentials", "-n", NS,
                  f"--from-literal=access={OFFSITE_KEYS[0]}", f"--from-literal=secret={OFFSITE_KEYS[1]}")
        env = json.dumps([{"name": "ETCDCTL_API", "value": "3"}, {"name": "ETCDCTL_ENDPOINTS", "value": cls.endpoint}])
        cls.install = c.helm(
            "install", RELEASE, os.path.join(ROOT, "chart"), "-n", NS, *[a for f in VALUES for a in ("-f", f)],
            "--set-json", f"backup.stackGraph.extraEnv={env}",
            "--set", f"backup.monitor.port={free_port()}",
            "--set", "backup.stackGraph.replicate.enabled=true",
            "--set", f"backup.stackGraph.replicate.bucketName={OFFSITE_BUCKET}",
            "--set", f"backup.replicate.endpoint=http://127.0.0.1:{port}",
            "--set", "backup.replicate.existingSecret=offsite-credentials",
            "--set", "backup.replicate.accessKeyKey=access",
            "--set", "backup.replicate.secretKeyKey=secret",
            "--wait", "--timeout", "120s")
        cls.operator = c.operator_kubeconfig(NS)

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        cls.offsite.terminate()
        cls.offsite.wait()
        cls.offsite_log.close()
        stop_graph(cls)

    def script(self, name, *args):
        return self.c.run("bash", os.path.join(ROOT, "scripts", "restore", name), "-n", NS, *args, check=False,
                          timeout=400, kubeconfig=self.operator)

    def listed(self, *args):
        p = self.script("list-stackgraph-backups.sh", "-o", "json", *args)
        self.assertEqual(p.returncode, 0, p.stdout[-2000:] + p.stderr)
        return [r["name"] for r in json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("[")][0])]

    def run_job(self, cronjob, job, container):
        c = self.c
        c.kubectl("create", "job", f"--from=cronjob/{cronjob}", job, "-n", NS)
        p = c.kubectl("wait", f"job/{job}", "-n", NS, "--for=condition=complete", "--timeout=240s", check=False,
                      timeout=260)
        logs = c.kubectl("logs", f"job/{job}", "-n", NS, "-c", container, check=False).stdout
        self.assertEqual(p.returncode, 0, f"job {job} did not complete:\n{p.stderr}\n{logs}")
        return logs

    def test_replicate_cronjob_copies_and_the_script_lists_the_copy(self):
        c = self.c
        self.assertNotIn("unknown field", self.install.stderr)
        cronjob = json.loads(c.kubectl("get", "cronjob", f"{RELEASE}-sts-backup-stackgraph-replicate", "-n", NS,
                                       "-o", "json").stdout)
        spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        self.assertFalse(spec["automountServiceAccountToken"])
        self.run_job(f"{RELEASE}-sts-backup-stackgraph-backup", "backup-1", "backup")
        (name,) = self.listed()
        # the control: nothing at the copy yet, so -replica reads another place than the primary
        self.assertEqual(self.listed("-replica"), [])
        logs = self.run_job(f"{RELEASE}-sts-backup-stackgraph-replicate", "replicate-1", "replicate")
        self.assertIn(f"copied {name}", logs)
        self.assertEqual(sorted(os.listdir(self.offsite_dir)), [name, f"{name}.manifest.json"])
        self.assertEqual(self.listed("-replica"), [name])
        # a second run finds it present and copies nothing
        logs = self.run_job(f"{RELEASE}-sts-backup-stackgraph-replicate", "replicate-2", "replicate")
        self.assertIn(f"present {name}", logs)
        self.assertNotIn("copied", logs)
        # the scripts' list Jobs are gone
        wait_for(lambda: not [j for j in json.loads(c.kubectl("get", "jobs", "-n", NS, "-o", "json").stdout)["items"]
                              if j["metadata"]["name"].startswith("stackgraph-list-backups-")],
                 60, "the list Jobs to be deleted")


if __name__ == "__main__":
    unittest.main()
