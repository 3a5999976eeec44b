"""Orchestrated restores end to end on the cluster double (issue 13): the chart installed with the
real helm, the restore Job started by scripts/restore/restore-stackgraph-backup.sh with the real
kubectl, its pod run in containers from the product's images, talking to the API double as the
chart's ServiceAccount with RBAC enforced. The Job itself locks the store (a Lease), scales the
writers — a Deployment of 3 and a StatefulSet of 2 — down and back to their recorded counts,
and records Events; a scheduled backup started during a restore is skipped, not failed.

Graph server: a real etcd on 127.0.0.1 (test_e2e.py); the restore target is a PVC the test can
empty or fill on the host.
"""

import datetime
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import images
from harness import ROOT, Cluster
from test_apiserver import wait_for
from test_e2e import etcd_digest, free_port, start_etcd, start_graph, stop_graph
from test_images import ETCD

NS = "orch"
RELEASE = "r"
VALUES = [os.path.join(ROOT, "tests/e2e/values", f) for f in ("common.yaml", "local.yaml", "etcd.yaml", "cluster.yaml")]
SELECTOR = "stackstate.com/connects-to-stackgraph=true"
LEASE = "sts-backup-lock-stackgraph"
ANNOTATION = "sts-backup.io/replicas-before-restore"
CRONJOB = f"{RELEASE}-sts-backup-stackgraph-backup"
ROLE = f"{RELEASE}-sts-backup-orchestrate"
SECURITY = {"runAsNonRoot": True, "runAsUser": 65532, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
# (kind, name, replicas, grace seconds, shell loop). The StatefulSet's pods ignore SIGTERM and
# are killed after their grace period, as a writer flushing a large buffer would be: this keeps
# a restore holding its lock long enough for a second run to meet it.
WRITERS = (("deployment", "graph-writer", 3, 2, "trap 'exit 0' TERM; while :; do sleep 1; done"),
           ("statefulset", "graph-sts", 2, 12, "trap '' TERM; while :; do sleep 1; done"))


def writer(kind, name, replicas, grace, loop):
    spec = {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {
        "metadata": {"labels": {"app": name}},
        "spec": {"terminationGracePeriodSeconds": grace, "containers": [{
            "name": "writer", "image": ETCD, "command": ["sh", "-c", loop], "securityContext": SECURITY}]}}}
    if kind == "statefulset":
        spec["serviceName"] = name
    return {"apiVersion": "apps/v1", "kind": "Deployment" if kind == "deployment" else "StatefulSet",
            "metadata": {"name": name, "namespace": NS, "labels": {"stackstate.com/connects-to-stackgraph": "true"}},
            "spec": spec}


class OrchestratedRestore(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        start_graph(cls, "sts-orch-", 100)
        cls.c = c = Cluster("1.34", kubelet=True)
        c.kubectl("create", "namespace", NS)
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "etcd-restore", "namespace": NS},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        c.kubectl("create", "-f", "-", input=json.dumps(pvc))
        for w in WRITERS:
            c.kubectl("create", "-f", "-", input=json.dumps(writer(*w)))
        extra_env = json.dumps([{"name": "ETCDCTL_API", "value": "3"},
                                {"name": "ETCDCTL_ENDPOINTS", "value": cls.endpoint}])
        c.helm("install", RELEASE, os.path.join(ROOT, "chart"), "-n", NS, *[a for f in VALUES for a in ("-f", f)],
               "--set-json", f"backup.stackGraph.extraEnv={extra_env}",
               "--set", f"backup.monitor.port={free_port()}", "--wait", "--timeout", "120s")
        cls.restored_dir = os.path.join(c.dir, "kubelet", "pvcs", NS, "etcd-restore", "data")
        # The operator runs every script with exactly the documented minimal Role.
        c.kubectl("create", "serviceaccount", "operator", "-n", NS)
        c.kubectl("apply", "-n", NS, "-f", os.path.join(ROOT, "scripts", "restore", "operator-role.yaml"))
        c.kubectl("create", "rolebinding", "operator", "-n", NS, "--role=sts-backup-operator",
                  f"--serviceaccount={NS}:operator")
        cls.operator = c.token_kubeconfig(NS, "operator")
        job = cls.backup_job("first-backup")
        assert job["status"] == "Complete", job
        listed = cls.script("list-stackgraph-backups.sh", "-o", "json")
        assert listed.returncode == 0, listed.stderr
        rows = json.loads([ln for ln in listed.stdout.splitlines() if ln.startswith("[")][0])
        assert len(rows) == 1, rows
        cls.name = rows[0]["name"]

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()
        stop_graph(cls)

    # ---- helpers ------------------------------------------------------------------------------

    @classmethod
    def script(cls, name, *args):
        """A restore script as the operator (the minimal Role of scripts/restore/operator-role.yaml)."""
        return cls.c.run("bash", os.path.join(ROOT, "scripts", "restore", name), "-n", NS, *args, check=False,
                         timeout=400, kubeconfig=cls.operator)

    def start_script(self, name, *args):
        """The script in the background; its output goes to files read by finish()."""
        out = tempfile.NamedTemporaryFile("w+", dir=self.work, suffix=".out", delete=False)  # noqa: SIM115
        err = tempfile.NamedTemporaryFile("w+", dir=self.work, suffix=".err", delete=False)  # noqa: SIM115
        proc = subprocess.Popen(["bash", os.path.join(ROOT, "scripts", "restore", name), "-n", NS, *args],
                                stdout=out, stderr=err, text=True, env=dict(self.c.env, KUBECONFIG=self.operator),
                                cwd=ROOT)
        return proc, out, err

    @staticmethod
    def finish(started, timeout=400):
        proc, out, err = started
        proc.wait(timeout=timeout)
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())

    @classmethod
    def backup_job(cls, name):
        """A scheduled backup started from the CronJob; (condition, exit log) once it ended."""
        c = cls.c
        c.kubectl("create", "job", f"--from=cronjob/{CRONJOB}", name, "-n", NS)

        def ended():
            st = json.loads(c.kubectl("get", "job", name, "-n", NS, "-o", "json").stdout).get("status", {})
            done = [x["type"] for x in st.get("conditions", []) if x["status"] == "True"
                    and x["type"] in ("Complete", "Failed")]
            return done[0] if done else None

        status = wait_for(ended, 180, f"backup job {name} to end")
        logs = c.kubectl("logs", f"job/{name}", "-n", NS, "-c", "backup", check=False)
        return {"status": status, "log": logs.stdout + logs.stderr}

    def workloads(self):
        """{name: (spec.replicas, ready, metadata.generation, recorded annotation)} of both writers."""
        out = {}
        for kind, name, *_ in WRITERS:
            o = json.loads(self.c.kubectl("get", kind, name, "-n", NS, "-o", "json").stdout)
            out[name] = (o["spec"]["replicas"], o.get("status", {}).get("readyReplicas", 0),
                         o["metadata"].get("generation"), (o["metadata"].get("annotations") or {}).get(ANNOTATION))
        return out

    def counts(self):
        return {name: w[0] for name, w in self.workloads().items()}

    def assert_writers_back(self):
        wait_for(lambda: all(r == want and ready == want and rec is None for (r, ready, _, rec), want in
                             zip(self.workloads().values(), (3, 2))), 120, "the writers back at 3 and 2, unannotated")

    def lease(self):
        p = self.c.kubectl("get", "lease", LEASE, "-n", NS, "-o", "json", check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def lease_free(self):
        lease = self.lease()
        if lease is None or not lease["spec"].get("holderIdentity"):
            return True
        renewed = datetime.datetime.fromisoformat(lease["spec"]["renewTime"].replace("Z", "+00:00"))
        left = renewed + datetime.timedelta(seconds=lease["spec"]["leaseDurationSeconds"])
        return left < datetime.datetime.now(datetime.timezone.utc)

    def events(self, involved):
        items = json.loads(self.c.kubectl("get", "events", "-n", NS, "-o", "json").stdout)["items"]
        return [(e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == involved]

    def restore_pod(self, job_prefix="stackgraph-restore-"):
        pods = json.loads(self.c.kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/component=stackgraph-restore",
                                         "-o", "json").stdout)["items"]
        running = [p for p in pods if p["status"].get("phase") == "Running"
                   and p["metadata"]["labels"].get("job-name", "").startswith(job_prefix)]
        return running[0] if len(running) == 1 else None

    def empty_target(self):
        shutil.rmtree(self.restored_dir, ignore_errors=True)

    def fill_target(self):
        os.makedirs(os.path.join(self.restored_dir, "member"), exist_ok=True)

    def setUp(self):
        self.assert_writers_back()
        wait_for(self.lease_free, 30, "the store's lease to be free")

    # ---- scenarios -----------------------------------------------------------------------------

    def test_restore_scales_both_writers_down_and_back_to_3_and_2(self):
        self.empty_target()
        seen = {name: subprocess.Popen(["kubectl", "get", kind, name, "-n", NS, "-w", "-o",
                                        "jsonpath={.spec.replicas}{\"\\n\"}", "--request-timeout=300s"],
                                       stdout=subprocess.PIPE, text=True, env=self.c.env)
                for kind, name, *_ in WRITERS}
        p = self.script("restore-stackgraph-backup.sh", self.name)
        for w in seen.values():
            w.terminate()
        # every status update is an event too: keep the changes of spec.replicas
        seen = {name: [v for i, v in enumerate(vals) if i == 0 or vals[i - 1] != v]
                for name, vals in ((n, w.communicate()[0].split()) for n, w in seen.items())}
        self.assertEqual(p.returncode, 0, f"{p.stdout}\n{p.stderr}")
        self.assertEqual(seen, {"graph-writer": ["3", "0", "3"], "graph-sts": ["2", "0", "2"]})
        self.assert_writers_back()
        self.assertIn("Scaled down statefulset/graph-sts (2) to 0", p.stdout)
        # the data restored is etcd's, byte for byte what the graph held
        copy = os.path.join(self.work, "restored")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.restored_dir, copy)
        with open(os.path.join(self.work, "etcd-restored.log"), "w", encoding="utf-8") as log:
            proc, endpoint = start_etcd(copy, log)
            try:
                self.assertEqual(etcd_digest(endpoint), etcd_digest(self.endpoint))
            finally:
                proc.terminate()
                proc.wait()
        job = self.job_of(p)
        reasons = [r for r, _ in self.events(job)]
        self.assertEqual(reasons, ["RestoreCompleted"], self.events(job))
        self.assertTrue(self.lease_free(), self.lease())

    def job_of(self, p):
        """The Job name the script announced ("Starting job NAME")."""
        for line in p.stderr.splitlines():
            if "Starting job " in line:
                return line.split("Starting job ", 1)[1].split()[0]
        self.fail(f"no job name in the script's output:\n{p.stderr}")

    def test_refused_restore_never_scales_a_writer(self):
        self.fill_target()
        before = self.workloads()
        p = self.script("restore-stackgraph-backup.sh", self.name)
        self.assertEqual(p.returncode, 3, f"{p.stdout}\n{p.stderr}")
        self.assertIn("the target holds data", p.stdout)
        # generation moves with every spec change: unchanged means never scaled, not scaled and back
        self.assertEqual(self.workloads(), before)
        self.assertEqual([r for r, _ in self.events(self.job_of(p))], ["RestoreRefused"])

    def test_failure_after_scale_down_scales_back_and_passes_the_exit_through(self):
        """-force skips the emptiness check; the importer (etcdctl snapshot restore) then fails on
        the existing data dir, after the writers went down: exit 1, writers back at 3 and 2."""
        self.fill_target()
        p = self.script("restore-stackgraph-backup.sh", self.name, "-force")
        self.assertEqual(p.returncode, 1, f"{p.stdout}\n{p.stderr}")
        self.assertIn("Scaled down deployment/graph-writer (3) to 0", p.stdout)
        self.assert_writers_back()
        self.assertEqual([r for r, _ in self.events(self.job_of(p))], ["RestoreFailed"])

    def test_sigkill_after_scale_down_is_recovered_by_the_next_run(self):
        self.empty_target()
        started = self.start_script("restore-stackgraph-backup.sh", self.name)
        # the writers are down (recorded) and the restore waits for the StatefulSet's pods
        wait_for(lambda: all(r == 0 and rec is not None for r, _, _, rec in self.workloads().values()), 120,
                 "both writers scaled down with their counts recorded")
        pod = wait_for(self.restore_pod, 30, "the restore pod")
        meta = pod["metadata"]
        name = f"k8s_restore_{meta['name']}_{NS}_{meta['uid'][:8]}_0"
        images.podman("kill", "--signal", "KILL", name)
        p = self.finish(started)
        self.assertEqual(p.returncode, 137, f"{p.stdout}\n{p.stderr}")
        # nothing scaled them back: the counts are still recorded on the workloads
        self.assertEqual({n: (w[0], w[3]) for n, w in self.workloads().items()},
                         {"graph-writer": (0, "3"), "graph-sts": (0, "2")})
        # the next run (a scheduled backup) takes the dead holder's lease once it expired
        wait_for(self.lease_free, 30, "the dead restore's lease to expire")
        job = self.backup_job("after-kill")
        self.assertEqual(job["status"], "Complete", job["log"])
        self.assertIn("Recovered an interrupted restore", job["log"])
        self.assertIn("taking over the expired lock", job["log"])
        self.assert_writers_back()

    def test_second_restore_and_a_backup_meet_the_lock(self):
        self.empty_target()
        first = self.start_script("restore-stackgraph-backup.sh", self.name)
        holder = wait_for(lambda: (self.lease() or {}).get("spec", {}).get("holderIdentity")
                          if not self.lease_free() else None, 120, "the first restore to take the lock")
        # a second restore, forced: refused by the lock (exit 3) before any check or scaling
        second = self.script("restore-stackgraph-backup.sh", self.name, "-force")
        self.assertEqual(second.returncode, 3, f"{second.stdout}\n{second.stderr}")
        self.assertIn(f"locked by {holder} (restore", second.stdout)
        # a scheduled backup: skipped with a line, the Job completes
        job = self.backup_job("during-restore")
        self.assertEqual(job["status"], "Complete", job["log"])
        self.assertIn(f"backup skipped: store stackgraph is locked by {holder}", job["log"])
        self.assertEqual([r for r, _ in self.events("during-restore")], ["BackupSkipped"])
        p = self.finish(first)
        self.assertEqual(p.returncode, 0, f"{p.stdout}\n{p.stderr}")
        self.assert_writers_back()

    def test_role_without_patch_on_statefulsets_fails_with_the_403(self):
        """Negative control: the chart's Role with `patch` taken away from statefulsets. The
        Deployment is already down when the StatefulSet's patch is refused: the restore fails
        (exit 1) naming the 403, and the Deployment is scaled back."""
        c = self.c
        self.empty_target()
        original = json.loads(c.kubectl("get", "role", ROLE, "-n", NS, "-o", "json").stdout)
        broken = json.loads(json.dumps(original))
        rules = []
        for rule in broken["rules"]:
            if "statefulsets" in rule["resources"]:
                rules.append(dict(rule, resources=[r for r in rule["resources"] if r != "statefulsets"]))
                rules.append(dict(rule, resources=["statefulsets"], verbs=[v for v in rule["verbs"] if v != "patch"]))
            else:
                rules.append(rule)
        broken["rules"] = rules
        c.kubectl("replace", "-f", "-", input=json.dumps(broken))
        try:
            p = self.script("restore-stackgraph-backup.sh", self.name)
        finally:
            original["metadata"].pop("resourceVersion", None)
            c.kubectl("replace", "-f", "-", input=json.dumps(original))
        self.assertEqual(p.returncode, 1, f"{p.stdout}\n{p.stderr}")
        self.assertIn('cannot patch resource "statefulsets" in API group "apps"', p.stdout)
        self.assert_writers_back()
        self.assertFalse(os.path.exists(self.restored_dir), "the import ran although the scale-down failed")


if __name__ == "__main__":
    unittest.main()
