"""Stores on the cluster double (issue 17): an etcd store declared only in values
(backup.stores.etcd, beside StackGraph) installed with the real helm; the generic scripts run with
the real kubectl as an operator holding exactly scripts/restore/operator-role.yaml:
backup-now.sh STORE and backup-stackgraph-now.sh create a Job from the store's CronJob, follow its
log and pass its exit code; list-backups.sh lists; restore-backup.sh restores into an empty target
(data compared with the backed-up etcd), refuses a non-empty one with exit 3 and leaves it
untouched. Pods run in containers from the product's images (the etcd stand-in image).
"""

import json
import os
import shutil
import tempfile
import unittest

import yaml

from harness import ROOT, Cluster
from test_apiserver import wait_for
from test_e2e import etcd_digest, fill_etcd, free_port, start_etcd, start_graph, stop_graph

NS = "stores"
RELEASE = "r"
E2E_VALUES = os.path.join(ROOT, "tests/e2e/values")
VALUES = [os.path.join(E2E_VALUES, f) for f in ("common.yaml", "local.yaml", "etcd.yaml", "cluster.yaml")]


def etcd_store_values(path):
    """tests/e2e/values/etcd.yaml's StackGraph store, declared as backup.stores.etcd (own bucket)."""
    def section(name):
        with open(os.path.join(E2E_VALUES, name), encoding="utf-8") as f:
            return yaml.safe_load(f)["backup"]["stackGraph"]

    store = section("etcd.yaml")
    store["bucketName"] = "sts-cluster-store-etcd"
    store["scheduled"] = dict(section("common.yaml")["scheduled"], enabled=True)
    store["orchestrate"] = {"enabled": True}
    # an orchestrated restore needs the store's writers; none run in this test
    store["restore"]["scaleDownSelector"] = "app=etcd-store-writer"
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump({"backup": {"stores": {"etcd": store}}}, f)


class DeclaredStore(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        start_graph(cls, "sts-stores-", 120)
        cls.c = c = Cluster("1.34", kubelet=True)
        c.kubectl("create", "namespace", NS)
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "etcd-restore", "namespace": NS},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        c.kubectl("create", "-f", "-", input=json.dumps(pvc))
        store_values = os.path.join(cls.work, "store-etcd.yaml")
        etcd_store_values(store_values)
        env = json.dumps([{"name": "ETCDCTL_API", "value": "3"}, {"name": "ETCDCTL_ENDPOINTS", "value": cls.endpoint}])
        c.helm("install", RELEASE, os.path.join(ROOT, "chart"), "-n", NS,
               *[a for f in VALUES + [store_values] for a in ("-f", f)],
               "--set-json", f"backup.stackGraph.extraEnv={env}", "--set-json", f"backup.stores.etcd.extraEnv={env}",
               "--set", f"backup.monitor.port={free_port()}", "--wait", "--timeout", "120s")
        cls.restored_dir = os.path.join(c.dir, "kubelet", "pvcs", NS, "etcd-restore", "data")
        cls.operator = c.operator_kubeconfig(NS)

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        stop_graph(cls)

    def script(self, name, *args):
        return self.c.run("bash", os.path.join(ROOT, "scripts", "restore", name), "-n", NS, *args, check=False,
                          timeout=400, kubeconfig=self.operator)

    def listed(self, store):
        p = self.script("list-backups.sh", store, "-o", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        return [r["name"] for r in json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("[")][0])]

    def test_backup_now_list_restore_refuse(self):
        c = self.c
        cronjobs = c.kubectl("get", "cronjobs", "-n", NS, "-l", "sts-backup.io/store=etcd", "-o", "name").stdout.split()
        self.assertEqual(sorted(cronjobs), ["cronjob.batch/r-sts-backup-etcd-backup",
                                            "cronjob.batch/r-sts-backup-etcd-retention"])
        source = etcd_digest(self.endpoint)
        # backup-now.sh: a Job from the store's CronJob, followed, its exit code passed through
        p = self.script("backup-now.sh", "etcd")
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr)
        self.assertIn("etcd backup committed (job etcd-backup-now-", p.stderr)
        self.assertIn("=== Backup ", p.stdout + p.stderr)  # the Job's log was followed
        def now_jobs():
            items = json.loads(c.kubectl("get", "jobs", "-n", NS, "-o", "json").stdout)["items"]
            return [j["metadata"]["name"] for j in items if j["metadata"]["name"].startswith("etcd-backup-now-")]
        wait_for(lambda: not now_jobs(), 60, "the finished backup-now Job to be deleted")
        (name,) = self.listed("etcd")
        # the StackState-named twin for StackGraph, into StackGraph's own bucket
        p = self.script("backup-stackgraph-now.sh")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(len(self.listed("stackgraph")), 1)
        self.assertEqual(self.listed("etcd"), [name], "the StackGraph backup went to its own bucket")
        # a store without a CronJob: exit 1 naming the value, nothing created
        p = self.script("backup-now.sh", "nosuch")
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("backup.stores.nosuch.scheduled.enabled", p.stderr)
        # the etcd changes after the backup; the restore brings the backed-up keys
        fill_etcd(self.endpoint, 130)
        self.assertNotEqual(etcd_digest(self.endpoint), source)
        shutil.rmtree(self.restored_dir, ignore_errors=True)
        p = self.script("restore-backup.sh", "etcd", name)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr)
        self.assertIn(f"Restored etcd backup {name}.", p.stderr)
        copy = tempfile.mkdtemp(dir=self.work)
        shutil.copytree(self.restored_dir, os.path.join(copy, "data"))
        with open(os.path.join(self.work, "restored.log"), "w", encoding="utf-8") as log:
            proc, endpoint = start_etcd(os.path.join(copy, "data"), log)
            try:
                self.assertEqual(etcd_digest(endpoint), source)
            finally:
                proc.terminate()
                proc.wait()
        # now the target exists: refused with exit 3, nothing changed, the rerun hint names -force
        before = sorted(os.listdir(self.restored_dir))
        p = self.script("restore-backup.sh", "etcd", name)
        self.assertEqual(p.returncode, 3, p.stderr)
        self.assertIn(f"restore-backup.sh etcd -n {NS} {name} -force", p.stderr)
        self.assertEqual(sorted(os.listdir(self.restored_dir)), before)


if __name__ == "__main__":
    unittest.main()
