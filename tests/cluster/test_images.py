"""The product's images, built with podman from images/Dockerfile (runtime stage, FROM scratch, the
static binaries of images/build-static.sh) and run as pods of the cluster double with the chart's
security context."""

import json
import unittest

import images
from harness import Cluster
from test_apiserver import wait_for

JOBS = "sts-backup/jobs:0.1.0"
RCLONE = "docker.io/rclone/rclone:1.75.2"
ETCD = "quay.io/coreos/etcd:v3.4.23"

# The chart's pod and container security contexts (chart/templates/_pods.tpl renders these).
POD_SC = {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534, "fsGroup": 65534,
          "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SC = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "readOnlyRootFilesystem": True}


class ImagesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        images.build_jobs_image(JOBS)
        images.build_rclone_image(RCLONE)
        images.build_etcd_image(ETCD)
        cls.c = Cluster("1.34", kubelet=True)
        cls.c.kubectl("create", "namespace", "img")

    @classmethod
    def tearDownClass(cls):
        cls.c.stop()

    def test_jobs_image_holds_only_what_it_needs(self):
        files = images.image_files(JOBS)
        # podman export adds the container's own hosts/hostname/resolv.conf: not the image's
        regular = sorted(p for p, (_, _, _, t) in files.items() if t in (b"0", b"\x00")
                         and p not in ("/etc/hostname", "/etc/hosts", "/etc/resolv.conf"))
        self.assertEqual(regular, sorted(["/etc/group", "/etc/passwd", "/etc/ssl/certs/ca-certificates.crt"]
                                         + [f"/usr/local/bin/{b}" for b in images.BINARIES]))
        mode, uid, gid, _ = files["/tmp"]
        self.assertEqual(mode & 0o7777, 0o1777)
        for b in images.BINARIES:
            mode, uid, gid, _ = files[f"/usr/local/bin/{b}"]
            self.assertEqual((uid, gid), (0, 0))
            self.assertFalse(mode & 0o022, f"{b} is writable by the job user")
        config = json.loads(images.podman("image", "inspect", JOBS).stdout)[0]["Config"]
        self.assertEqual(config["User"], "65532:65532")
        self.assertEqual(config["Entrypoint"], ["/usr/local/bin/stackgraph-backup"])

    def test_binary_injected_into_the_graph_server_image_runs_there(self):
        """The chart's StackGraph pattern: the init container (jobs image) copies the binary into an
        emptyDir; the graph server's image (here the etcd stand-in) runs it, both under the chart's
        non-root, read-only, capability-free security context."""
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "inject", "namespace": "img"}, "spec": {
            "restartPolicy": "Never", "securityContext": POD_SC, "automountServiceAccountToken": False,
            "initContainers": [{"name": "copy-binary", "image": JOBS,
                                "command": ["/usr/local/bin/stackgraph-backup"], "args": ["copy-to", "/sts-backup/bin"],
                                "securityContext": CONTAINER_SC,
                                "volumeMounts": [{"name": "bin", "mountPath": "/sts-backup/bin"}]}],
            "containers": [{"name": "server", "image": ETCD, "command": ["/sts-backup/bin/stackgraph-backup"],
                            "args": ["--version"], "securityContext": CONTAINER_SC,
                            "volumeMounts": [{"name": "bin", "mountPath": "/sts-backup/bin"}]}],
            "volumes": [{"name": "bin", "emptyDir": {}}]}}
        self.c.kubectl("create", "-f", "-", input=json.dumps(pod))
        wait_for(lambda: json.loads(self.c.kubectl("get", "pod", "inject", "-n", "img", "-o", "json").stdout)
                 ["status"].get("phase") in ("Succeeded", "Failed"), 60, "the injection pod")
        status = json.loads(self.c.kubectl("get", "pod", "inject", "-n", "img", "-o", "json").stdout)["status"]
        self.assertEqual(status["phase"], "Succeeded", self.c.kubectl("logs", "inject", "-n", "img", "-c",
                                                                      "copy-binary", check=False).stdout)
        self.assertIn("stackgraph-backup", self.c.kubectl("logs", "inject", "-n", "img", "-c", "server").stdout)

    def test_rclone_image_runs_non_root_read_only(self):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "rclone", "namespace": "img"}, "spec": {
            "restartPolicy": "Never", "securityContext": POD_SC,
            "containers": [{"name": "rclone", "image": RCLONE, "command": ["rclone"], "args": ["version"],
                            "securityContext": CONTAINER_SC}]}}
        self.c.kubectl("create", "-f", "-", input=json.dumps(pod))
        wait_for(lambda: json.loads(self.c.kubectl("get", "pod", "rclone", "-n", "img", "-o", "json").stdout)
                 ["status"].get("phase") == "Succeeded", 60, "rclone version")
        self.assertIn("rclone v1.75.2", self.c.kubectl("logs", "rclone", "-n", "img").stdout)


if __name__ == "__main__":
    unittest.main()
