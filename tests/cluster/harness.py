"""Starts the cluster double for a test and runs the real kubectl and helm against it."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

import pki

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


class Cluster:
    def __init__(self, k8s_version="1.34", kubelet=False):
        self.dir = tempfile.mkdtemp(prefix="sts-cluster-")
        args = [sys.executable, os.path.join(HERE, "cluster.py"), "--dir", self.dir, "--k8s-version", k8s_version]
        if kubelet:
            args.append("--kubelet")
        self.log = open(os.path.join(self.dir, "cluster.log"), "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not os.path.exists(os.path.join(self.dir, "ready")):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"cluster double did not start: {self.read_log()}")
            time.sleep(0.05)
        with open(os.path.join(self.dir, "port"), encoding="utf-8") as f:
            self.port = int(f.read())
        self.server = f"https://127.0.0.1:{self.port}"
        self.kubeconfig = os.path.join(self.dir, "admin.kubeconfig")
        self.env = dict(os.environ, KUBECONFIG=self.kubeconfig, HOME=self.dir,
                        HELM_CACHE_HOME=os.path.join(self.dir, "helm-cache"),
                        HELM_CONFIG_HOME=os.path.join(self.dir, "helm-config"),
                        HELM_DATA_HOME=os.path.join(self.dir, "helm-data"))

    def read_log(self):
        with open(os.path.join(self.dir, "cluster.log"), encoding="utf-8") as f:
            return f.read()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if os.environ.get("STS_KEEP_CLUSTER") is None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, *args, input=None, kubeconfig=None, check=True, timeout=120):
        env = dict(self.env, KUBECONFIG=kubeconfig or self.kubeconfig)
        p = subprocess.run(list(args), input=input, capture_output=True, text=True, env=env, timeout=timeout,
                           cwd=ROOT)
        if check and p.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        return p

    def kubectl(self, *args, **kw):
        return self.run("kubectl", *args, **kw)

    def helm(self, *args, **kw):
        return self.run("helm", *args, **kw)

    def token_kubeconfig(self, namespace, service_account):
        """A kubeconfig authenticating as the ServiceAccount with a token from TokenRequest."""
        token = self.kubectl("create", "token", service_account, "-n", namespace).stdout.strip()
        path = os.path.join(self.dir, f"{namespace}-{service_account}.kubeconfig")
        pki.write_kubeconfig(path, self.server, os.path.join(self.dir, "pki", "ca.crt"),
                             f"{namespace}-{service_account}", namespace=namespace, token=token)
        return path

    def operator_kubeconfig(self, namespace):
        """A kubeconfig of the ServiceAccount `operator` holding exactly the restore scripts' Role
        (scripts/restore/operator-role.yaml) in the namespace."""
        self.kubectl("create", "serviceaccount", "operator", "-n", namespace)
        self.kubectl("apply", "-n", namespace, "-f", os.path.join(ROOT, "scripts", "restore", "operator-role.yaml"))
        self.kubectl("create", "rolebinding", "operator", "-n", namespace, "--role=sts-backup-operator",
                     f"--serviceaccount={namespace}:operator")
        return self.token_kubeconfig(namespace, "operator")
