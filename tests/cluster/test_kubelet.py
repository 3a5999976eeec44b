"""Pods of the API double in real containers (podman + runc), driven by the real kubectl.

The test image is built here, FROM scratch, with podman: busybox-static, the kubectl binary (to act
as an in-cluster client from a pod) and an empty /tmp; no registry is reached.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest

import kubelet
from harness import Cluster
from test_apiserver import wait_for

IMAGE = "localhost/sts-test/toolbox:1"


def build_image():
    env = kubelet.podman_env(tempfile.mkdtemp(prefix="sts-podman-"))
    ctx = tempfile.mkdtemp(prefix="sts-image-")
    try:
        os.makedirs(os.path.join(ctx, "bin"))
        os.makedirs(os.path.join(ctx, "tmp"))
        shutil.copy(shutil.which("busybox") or "/bin/busybox", os.path.join(ctx, "bin", "busybox"))
        for tool in ("sh", "cat", "echo", "id", "sleep", "ls", "touch", "grep"):
            os.symlink("busybox", os.path.join(ctx, "bin", tool))
        shutil.copy(shutil.which("kubectl"), os.path.join(ctx, "bin", "kubectl"))
        with open(os.path.join(ctx, "Containerfile"), "w", encoding="utf-8") as f:
            f.write("FROM scratch\nCOPY bin /bin\nCOPY tmp /tmp\nENV PATH=/bin\n")
        subprocess.run(["podman", "build", "-q", "-t", IMAGE, ctx], env=env, check=True, capture_output=True)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def pod(name, containers, **spec):
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "k"},
            "spec": {"restartPolicy": "Never", "containers": containers, **spec}}


def container(name, script, **kw):
    return {"name": name, "image": IMAGE, "command": ["/bin/sh", "-c", script], **kw}


NON_ROOT = {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532, "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


class KubeletTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        build_image()
        cls.c = Cluster("1.34", kubelet=True)
        cls.c.kubectl("create", "namespace", "k")

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()

    def create(self, obj):
        self.c.kubectl("create", "-f", "-", input=json.dumps(obj))

    def get(self, *args):
        return json.loads(self.c.kubectl("get", *args, "-n", "k", "-o", "json").stdout)

    def phase(self, name, want, timeout=60):
        return wait_for(lambda: self.get("pod", name)["status"].get("phase") == want and self.get("pod", name),
                        timeout, f"pod {name} {want}")

    def logs(self, name, *args):
        return self.c.kubectl("logs", name, "-n", "k", *args).stdout

    def test_job_runs_to_completion_and_logs(self):
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "hello", "namespace": "k"},
               "spec": {"ttlSecondsAfterFinished": 3, "template": {"spec": {
                   "restartPolicy": "Never", "containers": [container("main", "id -u; echo done",
                                                                      securityContext=NON_ROOT)]}}}}
        self.create(job)
        self.c.kubectl("wait", "job/hello", "-n", "k", "--for=condition=complete", "--timeout=60s")
        self.assertEqual(self.logs("job/hello").split(), ["65532", "done"])
        status = self.get("job", "hello")["status"]
        self.assertEqual(status["succeeded"], 1)
        # ttlSecondsAfterFinished removes the job, and its pod with it
        wait_for(lambda: "hello" not in self.c.kubectl("get", "jobs", "-n", "k", "-o", "name").stdout, 20,
                 "the TTL controller")
        wait_for(lambda: not self.c.kubectl("get", "pods", "-n", "k", "-l", "job-name=hello", "-o",
                                            "name").stdout.strip(), 20, "the job's pod to go")

    def test_failing_job_hits_backoff_limit_with_exit_codes(self):
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "fails", "namespace": "k"},
               "spec": {"backoffLimit": 1, "template": {"spec": {
                   "restartPolicy": "Never", "containers": [container("main", "echo trying; exit 3")]}}}}
        self.create(job)
        self.c.kubectl("wait", "job/fails", "-n", "k", "--for=condition=failed", "--timeout=60s")
        cond = [c for c in self.get("job", "fails")["status"]["conditions"] if c["type"] == "Failed"][0]
        self.assertEqual(cond["reason"], "BackoffLimitExceeded")
        pods = self.get("pods", "-l", "job-name=fails")["items"]
        self.assertEqual(len(pods), 2)
        for p in pods:
            self.assertEqual(p["status"]["phase"], "Failed")
            self.assertEqual(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3)

    def test_active_deadline_stops_the_job(self):
        job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "slow", "namespace": "k"},
               "spec": {"activeDeadlineSeconds": 3, "template": {"spec": {
                   "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                   "containers": [container("main", "sleep 60")]}}}}
        self.create(job)
        self.c.kubectl("wait", "job/slow", "-n", "k", "--for=condition=failed", "--timeout=60s")
        cond = [c for c in self.get("job", "slow")["status"]["conditions"] if c["type"] == "Failed"][0]
        self.assertEqual(cond["reason"], "DeadlineExceeded")
        wait_for(lambda: not self.get("pods", "-l", "job-name=slow")["items"], 30, "the deadline's pod deletion")

    def test_init_container_volumes_env_and_follow_logs(self):
        self.c.kubectl("create", "secret", "generic", "creds", "-n", "k", "--from-literal=password=s3cr3t",
                       "--from-literal=user=u1")
        self.c.kubectl("create", "configmap", "conf", "-n", "k", "--from-literal=MODE=fast")
        p = pod("init", [container("main", "cat /shared/from-init; echo pw=$PASSWORD user=$user mode=$MODE "
                                           "ns=$NS; cat /creds/password; echo; for i in 1 2 3; do echo tick$i; "
                                           "sleep 1; done",
                                   env=[{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds",
                                                                                           "key": "password"}}},
                                        {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
                                   envFrom=[{"secretRef": {"name": "creds"}}, {"configMapRef": {"name": "conf"}}],
                                   volumeMounts=[{"name": "shared", "mountPath": "/shared"},
                                                 {"name": "creds", "mountPath": "/creds"}],
                                   securityContext=NON_ROOT)],
                initContainers=[container("prepare", "echo prepared-by-init > /shared/from-init",
                                          volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
                                          securityContext=NON_ROOT)],
                volumes=[{"name": "shared", "emptyDir": {}}, {"name": "creds", "secret": {"secretName": "creds"}}])
        self.create(p)
        self.phase("init", "Running", 60)
        out = self.logs("init", "-f", "-c", "main")
        self.assertEqual(out.splitlines(), ["prepared-by-init", "pw=s3cr3t user=u1 mode=fast ns=k", "s3cr3t",
                                            "tick1", "tick2", "tick3"])
        done = self.phase("init", "Succeeded")
        self.assertEqual(done["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 0)

    def test_read_only_root_filesystem_blocks_writes(self):
        """Negative control: under readOnlyRootFilesystem a write to / fails inside the container; the
        same write to an emptyDir succeeds."""
        self.create(pod("ro", [container("main", "touch /written && echo wrote-root; touch /scratch/x && "
                                                 "echo wrote-emptydir", securityContext=NON_ROOT,
                                         volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}])],
                        volumes=[{"name": "scratch", "emptyDir": {}}]))
        self.phase("ro", "Succeeded")
        out = self.logs("ro")
        self.assertIn("Read-only file system", out)
        self.assertNotIn("wrote-root", out)
        self.assertIn("wrote-emptydir", out)
        # the same pod as root with a writable root filesystem writes (the control's control)
        self.create(pod("rw", [container("main", "touch /written && echo wrote-root",
                                         securityContext={"readOnlyRootFilesystem": False})]))
        self.phase("rw", "Succeeded")
        self.assertIn("wrote-root", self.logs("rw"))

    def test_run_as_non_root_refuses_a_root_image(self):
        """Negative control: runAsNonRoot with an image whose user is root is refused by the kubelet."""
        self.create(pod("root", [container("main", "id -u", securityContext={"runAsNonRoot": True})]))
        state = wait_for(lambda: (self.get("pod", "root")["status"].get("containerStatuses") or [{}])[0]
                         .get("state", {}).get("waiting", {}).get("reason") == "CreateContainerConfigError"
                         and self.get("pod", "root")["status"]["containerStatuses"][0]["state"]["waiting"], 30,
                         "CreateContainerConfigError")
        self.assertIn("container has runAsNonRoot and image will run as root", state["message"])
        self.assertEqual(self.get("pod", "root")["status"]["phase"], "Pending")
        self.create(pod("rootuid", [container("main", "id -u", securityContext={"runAsNonRoot": True,
                                                                                 "runAsUser": 0})]))
        state = wait_for(lambda: (self.get("pod", "rootuid")["status"].get("containerStatuses") or [{}])[0]
                         .get("state", {}).get("waiting", {}).get("message"), 30, "runAsUser refusal")
        self.assertIn("container's runAsUser breaks non-root policy", state)
        self.c.kubectl("delete", "pod", "root", "rootuid", "-n", "k", "--wait=true", "--timeout=30s")

    def test_capabilities_dropped(self):
        self.create(pod("caps", [container("main", "grep CapEff /proc/self/status", securityContext=NON_ROOT)]))
        self.phase("caps", "Succeeded")
        self.assertEqual(self.logs("caps").split(), ["CapEff:", "0000000000000000"])

    def test_in_cluster_client_is_held_to_rbac(self):
        """A pod's ServiceAccount token reaches the API double from inside the container; RBAC applies."""
        self.c.kubectl("create", "serviceaccount", "lister", "-n", "k")
        spec = {"serviceAccountName": "lister"}
        self.create(pod("incluster", [container("main", "kubectl get configmaps -o name; echo exit=$?",
                                                securityContext=NON_ROOT)], **spec))
        self.phase("incluster", "Succeeded")
        out = self.logs("incluster")
        self.assertIn('configmaps is forbidden: User "system:serviceaccount:k:lister" cannot list resource '
                      '"configmaps" in API group "" in the namespace "k"', out)
        self.c.kubectl("create", "role", "lister", "-n", "k", "--verb=list", "--resource=configmaps")
        self.c.kubectl("create", "rolebinding", "lister", "-n", "k", "--role=lister", "--serviceaccount=k:lister")
        self.create(pod("incluster2", [container("main", "kubectl get configmaps -o name",
                                                 securityContext=NON_ROOT)], **spec))
        self.phase("incluster2", "Succeeded")
        self.assertIn("configmap/kube-root-ca.crt", self.logs("incluster2"))

    def test_deployment_scale_down_terminates_pods(self):
        dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "writer", "namespace": "k"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "writer"}}, "template": {
                   "metadata": {"labels": {"app": "writer"}},
                   "spec": {"terminationGracePeriodSeconds": 5, "containers": [container(
                       "main", "trap 'echo got-TERM; exit 0' TERM; while true; do sleep 0.2; done",
                       securityContext=NON_ROOT)]}}}}
        self.create(dep)
        wait_for(lambda: self.get("deploy", "writer")["status"].get("readyReplicas") == 2, 60, "2 ready replicas")
        self.c.kubectl("scale", "deploy/writer", "-n", "k", "--replicas=0")
        wait_for(lambda: not self.get("pods", "-l", "app=writer")["items"], 60, "writer pods gone")
        # each container got SIGTERM (its trap ran), not only the SIGKILL after the grace period
        logs_dir = os.path.join(self.c.dir, "kubelet", "logs")
        for d in [d for d in os.listdir(logs_dir) if d.startswith("k_writer-")]:
            with open(os.path.join(logs_dir, d, "main.log"), encoding="utf-8") as f:
                self.assertIn("got-TERM", f.read(), d)
        # the controller counts the pods gone on its next pass
        wait_for(lambda: self.get("deploy", "writer")["status"].get("replicas", 0) == 0, 10,
                 "the Deployment's status to count 0 replicas")
        self.c.kubectl("delete", "deploy", "writer", "-n", "k")


if __name__ == "__main__":
    unittest.main()
