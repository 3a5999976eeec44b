"""The Kubernetes API double, driven by the real kubectl v1.34 and helm v3.19 over TLS.

Run: python3 -m unittest -v tests/cluster/test_apiserver.py (tests/cluster/run.sh does, with tools on PATH).
"""

import json
import os
import ssl
import subprocess
import time
import unittest
import urllib.error
import urllib.request

from harness import ROOT, Cluster

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: t, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: "busybox:1", env: [{name: A, value: "1"}]}]
"""

CHART_VALUES = [os.path.join(ROOT, "tests/e2e/values", f) for f in ("common.yaml", "local.yaml", "etcd.yaml")]


def wait_for(fn, timeout=15, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class ApiServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = Cluster("1.34")
        cls.c.kubectl("create", "namespace", "t")

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()

    def names(self, *args):
        out = self.c.kubectl("get", *args, "-o", "jsonpath={.items[*].metadata.name}").stdout
        return sorted(out.split())

    # ---- transport, discovery ------------------------------------------------------------------

    def test_version_and_discovery(self):
        out = self.c.kubectl("version", "-o", "json").stdout
        self.assertEqual(json.loads(out)["serverVersion"]["gitVersion"], "v1.34.0")
        res = self.c.kubectl("api-resources", "-o", "name").stdout.split()
        for name in ("pods", "deployments.apps", "jobs.batch", "cronjobs.batch", "leases.coordination.k8s.io",
                     "roles.rbac.authorization.k8s.io", "events.events.k8s.io", "statefulsets.apps"):
            self.assertIn(name, res)

    def test_unauthenticated_and_untrusted_are_refused(self):
        ctx = ssl.create_default_context(cafile=os.path.join(self.c.dir, "pki", "ca.crt"))
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{self.c.server}/api/v1/namespaces", context=ctx)
        self.assertEqual(e.exception.code, 401)
        req = urllib.request.Request(f"{self.c.server}/api/v1/namespaces",
                                     headers={"Authorization": "Bearer not-a-token"})
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, context=ctx)
        self.assertEqual(e.exception.code, 401)
        # a client that does not trust the test CA does not get through either
        p = self.c.kubectl("get", "ns", "--certificate-authority=/etc/ssl/certs/ca-certificates.crt", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("certificate", p.stderr)

    # ---- create, update, conflicts, validation -------------------------------------------------

    def test_apply_scale_and_stale_update_conflict(self):
        self.c.kubectl("apply", "-f", "-", input=DEPLOYMENT)
        wait_for(lambda: len(self.names("pods", "-n", "t", "-l", "app=web")) == 2, what="2 pods")
        self.c.kubectl("scale", "deployment/web", "-n", "t", "--replicas=1")
        wait_for(lambda: len(self.names("pods", "-n", "t", "-l", "app=web")) == 1, what="1 pod")
        self.assertEqual(self.c.kubectl("get", "deploy", "web", "-n", "t", "-o", "jsonpath={.spec.replicas}").stdout,
                         "1")
        # re-apply: the three-way strategic merge patch keeps env, changes replicas back
        self.c.kubectl("apply", "-f", "-", input=DEPLOYMENT.replace('value: "1"', 'value: "2"'))
        obj = json.loads(self.c.kubectl("get", "deploy", "web", "-n", "t", "-o", "json").stdout)
        self.assertEqual(obj["spec"]["replicas"], 2)
        self.assertEqual(obj["spec"]["template"]["spec"]["containers"][0]["env"], [{"name": "A", "value": "2"}])
        stale = dict(obj)
        stale["metadata"] = dict(obj["metadata"], resourceVersion=str(int(obj["metadata"]["resourceVersion"]) - 1))
        p = self.c.kubectl("replace", "-f", "-", input=json.dumps(stale), check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('Operation cannot be fulfilled on deployments.apps "web": the object has been modified',
                      p.stderr)
        self.c.kubectl("delete", "deployment", "web", "-n", "t")
        wait_for(lambda: not self.names("pods,rs", "-n", "t", "-l", "app=web"), what="cascading delete")

    def test_workload_defaults_come_back_after_a_patch_drops_them(self):
        """The server defaults on every write: a strategy given only its type gets both rolling-update
        bounds (helm's readiness check dereferences them), also after a `$retainKeys` patch (what
        helm upgrade sends for `strategy`) that drops them."""
        self.c.kubectl("create", "-f", "-", input=DEPLOYMENT.replace("name: web", "name: strat")
                       .replace("replicas: 2", "replicas: 0\n  strategy: {type: RollingUpdate}"))
        bounds = {"maxSurge": "25%", "maxUnavailable": "25%"}

        def strategy():
            return json.loads(self.c.kubectl("get", "deploy", "strat", "-n", "t", "-o", "json").stdout)["spec"][
                "strategy"]
        self.assertEqual(strategy(), {"type": "RollingUpdate", "rollingUpdate": bounds})
        self.c.kubectl("patch", "deploy", "strat", "-n", "t", "--type=strategic",
                       "-p", '{"spec":{"strategy":{"$retainKeys":["type"],"type":"RollingUpdate"}}}')
        self.assertEqual(strategy(), {"type": "RollingUpdate", "rollingUpdate": bounds})
        self.c.kubectl("patch", "deploy", "strat", "-n", "t", "--type=strategic",
                       "-p", '{"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}')
        self.assertEqual(strategy(), {"type": "Recreate"})
        self.c.kubectl("delete", "deploy", "strat", "-n", "t")

    def test_misspelt_field_is_a_strict_decoding_error(self):
        bad = DEPLOYMENT.replace("image:", "imagee:").replace("name: web", "name: bad")
        p = self.c.kubectl("create", "-f", "-", input=bad, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn('strict decoding error: unknown field "spec.template.spec.containers[0].imagee"', p.stderr)
        self.assertEqual(self.names("deploy", "-n", "t", "--field-selector", "metadata.name=bad"), [])
        # --validate=warn sends fieldValidation=Warn: accepted, the field dropped, the client warned
        p = self.c.kubectl("create", "--validate=warn", "-f", "-", input=bad)
        self.assertIn('unknown field "spec.template.spec.containers[0].imagee"', p.stderr)
        obj = json.loads(self.c.kubectl("get", "deploy", "bad", "-n", "t", "-o", "json").stdout)
        self.assertNotIn("imagee", obj["spec"]["template"]["spec"]["containers"][0])
        self.c.kubectl("delete", "deploy", "bad", "-n", "t")

    def test_schema_violations_are_rejected(self):
        missing_name = DEPLOYMENT.replace("{name: c, ", "{").replace("name: web", "name: noname")
        p = self.c.kubectl("create", "-f", "-", input=missing_name, check=False)
        self.assertIn('The Deployment "noname" is invalid: spec.template.spec.containers[0].name: Required value',
                      p.stderr)
        wrong_type = DEPLOYMENT.replace("replicas: 2", 'replicas: "two"').replace("name: web", "name: wt")
        p = self.c.kubectl("create", "-f", "-", input=wrong_type, check=False)
        self.assertIn('cannot be handled as a Deployment', p.stderr)
        mismatch = DEPLOYMENT.replace("matchLabels: {app: web}", "matchLabels: {app: other}")
        p = self.c.kubectl("create", "-f", "-", input=mismatch, check=False)
        self.assertIn("`selector` does not match template `labels`", p.stderr)
        job = ('{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"j","namespace":"t"},"spec":{"template":'
               '{"spec":{"containers":[{"name":"c","image":"x"}]}}}}')
        p = self.c.kubectl("create", "-f", "-", input=job, check=False)
        self.assertIn('spec.template.spec.restartPolicy: Unsupported value: "Always"', p.stderr)
        p = self.c.kubectl("create", "configmap", "Bad_Name", "-n", "t", check=False)
        self.assertIn("a lowercase RFC 1123 subdomain", p.stderr)
        self.assertEqual(self.names("deploy,job", "-n", "t"), [])

    def test_generate_name_selectors_and_already_exists(self):
        cm = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"gen-","namespace":"t",' \
             '"labels":{"tier":"a"}},"data":{"k":"v"}}'
        first = self.c.kubectl("create", "-f", "-", "-o", "name", input=cm).stdout.strip()
        second = self.c.kubectl("create", "-f", "-", "-o", "name", input=cm.replace('"a"', '"b"')).stdout.strip()
        self.assertRegex(first, r"^configmap/gen-[a-z0-9]{5}$")
        self.assertNotEqual(first, second)
        self.assertEqual(self.names("cm", "-n", "t", "-l", "tier=a"), [first.split("/")[1]])
        self.assertEqual(self.names("cm", "-n", "t", "-l", "tier in (a,b)"),
                         sorted([first.split("/")[1], second.split("/")[1]]))
        self.assertEqual(self.names("cm", "-n", "t", "-l", "tier,tier!=a"), [second.split("/")[1]])
        self.assertEqual(self.names("cm", "-n", "t", "--field-selector", f"metadata.name={second.split('/')[1]}"),
                         [second.split("/")[1]])
        p = self.c.kubectl("create", "configmap", first.split("/")[1], "-n", "t", check=False)
        self.assertIn(f'configmaps "{first.split("/")[1]}" already exists', p.stderr)
        p = self.c.kubectl("get", "pods", "-n", "t", "--field-selector", "spec.bogus=1", check=False)
        self.assertNotEqual(p.returncode, 0)
        self.c.kubectl("delete", "cm", "-n", "t", "-l", "tier")

    def test_namespace_must_exist_and_deletion_cascades(self):
        p = self.c.kubectl("create", "configmap", "x", "-n", "nowhere", check=False)
        self.assertIn('namespaces "nowhere" not found', p.stderr)
        self.c.kubectl("create", "namespace", "gone")
        self.c.kubectl("create", "configmap", "x", "-n", "gone")
        self.assertEqual(self.names("sa", "-n", "gone"), ["default"])
        self.c.kubectl("delete", "namespace", "gone")
        self.assertEqual(self.names("cm", "-A", "--field-selector", "metadata.namespace=gone"), [])

    # ---- jobs, cronjobs, owner references ------------------------------------------------------

    def test_job_from_cronjob_and_cascade_policies(self):
        cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": "t"},
              "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"backoffLimit": 1, "template": {
                  "metadata": {"labels": {"app": "nightly"}},
                  "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x:1"}]}}}}}}
        self.c.kubectl("create", "-f", "-", input=json.dumps(cj))
        self.c.kubectl("create", "job", "--from=cronjob/nightly", "manual-1", "-n", "t")
        job = json.loads(self.c.kubectl("get", "job", "manual-1", "-n", "t", "-o", "json").stdout)
        self.assertEqual(job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"], "manual")
        self.assertEqual(job["metadata"]["ownerReferences"][0]["kind"], "CronJob")
        self.assertEqual(job["spec"]["backoffLimit"], 1)
        pods = wait_for(lambda: self.names("pods", "-n", "t", "-l", "job-name=manual-1"), what="the job's pod")
        self.assertEqual(len(pods), 1)
        self.assertRegex(pods[0], r"^manual-1-[a-z0-9]{5}$")
        # --cascade=orphan keeps the pod and drops its owner reference
        self.c.kubectl("delete", "job", "manual-1", "-n", "t", "--cascade=orphan")
        pod = json.loads(self.c.kubectl("get", "pod", pods[0], "-n", "t", "-o", "json").stdout)
        self.assertNotIn("ownerReferences", pod["metadata"])
        self.c.kubectl("delete", "pod", pods[0], "-n", "t")
        # deleting the CronJob (background) takes its jobs and their pods
        self.c.kubectl("create", "job", "--from=cronjob/nightly", "manual-2", "-n", "t")
        wait_for(lambda: self.names("pods", "-n", "t", "-l", "job-name=manual-2"), what="pod of manual-2")
        self.c.kubectl("delete", "cronjob", "nightly", "-n", "t")
        wait_for(lambda: not self.names("jobs,pods", "-n", "t"), what="cascade from the CronJob")

    def test_watch_and_wait(self):
        proc = subprocess.Popen(["kubectl", "get", "configmaps", "-n", "t", "-w", "-o", "name",
                                 "--request-timeout=20s"], stdout=subprocess.PIPE, text=True, env=self.c.env)
        try:
            time.sleep(1)
            self.c.kubectl("create", "configmap", "watched", "-n", "t")
            line = ""
            while "watched" not in line:
                line = proc.stdout.readline()
                self.assertTrue(line, "watch ended without the new object")
        finally:
            proc.terminate()
            proc.wait()
        waiter = subprocess.Popen(["kubectl", "wait", "configmap/later", "-n", "t", "--for=create",
                                   "--timeout=20s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=self.c.env)
        time.sleep(1)
        self.c.kubectl("create", "configmap", "later", "-n", "t", "--from-literal=k=v")
        self.assertEqual(waiter.wait(timeout=30), 0, waiter.stderr.read())
        waiter = subprocess.Popen(["kubectl", "wait", "configmap/later", "-n", "t", "--for=delete",
                                   "--timeout=20s"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=self.c.env)
        time.sleep(1)
        self.c.kubectl("delete", "configmap", "later", "watched", "-n", "t")
        self.assertEqual(waiter.wait(timeout=30), 0, waiter.stderr.read())

    # ---- RBAC ----------------------------------------------------------------------------------

    def test_rbac_for_service_account_tokens(self):
        ns = "rbac"
        self.c.kubectl("create", "namespace", ns)
        self.c.kubectl("create", "serviceaccount", "restorer", "-n", ns)
        self.c.kubectl("create", "role", "restorer", "-n", ns, "--verb=get,list,watch", "--resource=deployments")
        self.c.kubectl("create", "rolebinding", "restorer", "-n", ns, "--role=restorer",
                       f"--serviceaccount={ns}:restorer")
        self.c.kubectl("apply", "-f", "-", input=DEPLOYMENT.replace("namespace: t", f"namespace: {ns}"))
        kc = self.c.token_kubeconfig(ns, "restorer")
        self.assertEqual(self.c.kubectl("get", "deploy", "-o", "name", kubeconfig=kc).stdout.strip(),
                         "deployment.apps/web")
        p = self.c.kubectl("scale", "deployment/web", "--replicas=0", kubeconfig=kc, check=False)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn(f'deployments.apps "web" is forbidden: User "system:serviceaccount:{ns}:restorer" cannot '
                      f'patch resource "deployments/scale" in API group "apps" in the namespace "{ns}"', p.stderr)
        p = self.c.kubectl("get", "pods", kubeconfig=kc, check=False)
        self.assertIn(f'pods is forbidden: User "system:serviceaccount:{ns}:restorer" cannot list resource "pods" '
                      f'in API group "" in the namespace "{ns}"', p.stderr)
        p = self.c.kubectl("get", "deploy", "-n", "t", kubeconfig=kc, check=False)
        self.assertIn('cannot list resource "deployments" in API group "apps" in the namespace "t"', p.stderr)
        self.assertEqual(self.c.kubectl("auth", "can-i", "patch", "deployments", "--subresource=scale",
                                        kubeconfig=kc, check=False).stdout.strip(), "no")
        # granting the subresource verb makes the same command pass
        self.c.kubectl("create", "role", "scaler", "-n", ns, "--verb=patch,get", "--resource=deployments/scale")
        self.c.kubectl("create", "rolebinding", "scaler", "-n", ns, "--role=scaler", f"--serviceaccount={ns}:restorer")
        self.c.kubectl("scale", "deployment/web", "--replicas=0", kubeconfig=kc)
        self.assertEqual(self.c.kubectl("auth", "can-i", "patch", "deployments", "--subresource=scale",
                                        kubeconfig=kc).stdout.strip(),
                         "yes")
        # the token dies with its ServiceAccount
        self.c.kubectl("delete", "serviceaccount", "restorer", "-n", ns)
        p = self.c.kubectl("get", "deploy", kubeconfig=kc, check=False)
        self.assertIn("Unauthorized", p.stderr)
        self.c.kubectl("delete", "namespace", ns)


class HelmTest(unittest.TestCase):
    """The product's chart installed, upgraded and uninstalled by the real helm, per Kubernetes version."""

    def _install(self, version):
        c = Cluster(version)
        try:
            c.kubectl("create", "namespace", "sts")
            values = [a for f in CHART_VALUES for a in ("-f", f)]
            p = c.helm("install", "r", os.path.join(ROOT, "chart"), "-n", "sts", *values)
            self.assertNotIn("unknown field", p.stderr)
            kinds = c.kubectl("get", "deploy,cronjob,cm,secret,pvc,svc", "-n", "sts", "-o", "name").stdout.split()
            for want in ("deployment.apps/r-minio", "cronjob.batch/r-sts-backup-stackgraph-backup",
                         "configmap/r-sts-backup-job-templates", "secret/sh.helm.release.v1.r.v1"):
                self.assertIn(want, kinds)
            c.helm("upgrade", "r", os.path.join(ROOT, "chart"), "-n", "sts", *values)
            self.assertIn("secret/sh.helm.release.v1.r.v2",
                          c.kubectl("get", "secret", "-n", "sts", "-o", "name").stdout.split())
            c.helm("uninstall", "r", "-n", "sts")
            left = c.kubectl("get", "deploy,cronjob,svc,secret", "-n", "sts", "-o", "name").stdout.split()
            self.assertEqual(left, [])
        finally:
            c.stop()

    def test_chart_on_1_34(self):
        self._install("1.34")

    def test_chart_on_1_28(self):
        self._install("1.28")

    def test_helm_install_of_invalid_objects(self):
        """A chart whose object is invalid fails `helm install` (422); a misspelt field is only a warning
        from a real server (helm sends no fieldValidation, the server default is Warn) — helm prints it."""
        c = Cluster("1.34")
        try:
            chart = os.path.join(c.dir, "badchart")
            os.makedirs(os.path.join(chart, "templates"))
            with open(os.path.join(chart, "Chart.yaml"), "w", encoding="utf-8") as f:
                f.write("apiVersion: v2\nname: bad\nversion: 0.1.0\n")
            with open(os.path.join(chart, "templates", "job.yaml"), "w", encoding="utf-8") as f:
                f.write("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec:\n"
                        "      restartPolicy: {{ .Values.policy }}\n"
                        "      containers: [{name: c, image: 'x:1', {{ .Values.field }}: [a]}]\n")
            p = c.helm("install", "bad", chart, "--set", "policy=Sometimes", "--set", "field=args", check=False)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn('spec.template.spec.restartPolicy: Unsupported value: "Sometimes"', p.stderr)
            p = c.helm("install", "typo", chart, "--set", "policy=Never", "--set", "field=argz")
            self.assertIn('Warning: unknown field \\"spec.template.spec.containers[0].argz\\"', p.stderr)
        finally:
            c.stop()


if __name__ == "__main__":
    unittest.main()
