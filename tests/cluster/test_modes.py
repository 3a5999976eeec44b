"""The chart's three storage modes and the PostgreSQL graph stand-in, end to end on the cluster
double (test_e2e.py covers local PVC mode with etcd and the writers' scaling).

Real here: helm and kubectl; the pods in containers built from the product's images; the storage
Deployment's `rclone serve s3` on its PVC or as a gateway in front of a real backend on
127.0.0.1 — SeaweedFS (`weed mini`, S3 gateway mode) or Azurite (Azure gateway mode); the graph
servers (PostgreSQL 15, etcd 3.4) and their own tools in the stand-in images; the restore scripts.

Each class installs one release (the storage Service is port 9000 on the host network, so one
release at a time), runs `helm test`, a backup from the CronJob, the list script, a restore into
the empty target with the data compared to the source, a refused restore into the non-empty
target (exit 3, target untouched) and, where the importer can overwrite (PostgreSQL), a forced
restore over a tampered target, then a forced restore of a backup changed in the backend (exit 4,
target untouched). The objects are read and changed in the backend itself (the volume, SeaweedFS,
Azurite), not through the storage service. The S3 gateway class then upgrades the release (generated storage keys kept, the storage
pod replaced and still reachable) and uninstalls it (nothing of the release left, the backups
still in the backend).
"""

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import images
from harness import ROOT, Cluster
from test_apiserver import wait_for
from test_e2e import etcd_digest, free_port, start_etcd
from test_images import ETCD, JOBS, RCLONE

POSTGRES = "docker.io/library/postgres:15"
RELEASE = "r"
STORAGE_PORT = 9000  # the chart's storage Service port; pods run on the host network
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def values_file(name):
    return os.path.join(ROOT, "tests", "e2e", "values", name)


def spawn(argv, log_path, env=None):
    """A server of this test in its own process group (stopped with stop())."""
    log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115  closed with the process
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    proc.log = log
    return proc


def stop(proc, sig=signal.SIGTERM):
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    proc.log.close()


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_port(port, proc, what):
    wait_for(lambda: port_open(port) or proc.poll() is not None, 60, what)
    if proc.poll() is not None:
        with open(proc.log.name, encoding="utf-8") as f:
            raise AssertionError(f"{what} exited ({proc.returncode}):\n{f.read()[-2000:]}")


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# ---- backends behind the gateway: real servers, read directly (never through the gateway) --------


class Backend:
    remote = ""  # rclone's on-the-fly remote for this backend

    def rclone(self, *args, data=None):
        return subprocess.run(["rclone", *args, "--config", "", "--retries", "1"], capture_output=True, input=data,
                              env=dict(os.environ, **self.rclone_env()), check=True, timeout=120).stdout

    def attach(self, c, ns, bucket):
        """Called once the cluster runs: the bucket, as the operator makes it (chart NOTES: "the
        buckets ... must exist there")."""
        self.rclone("mkdir", f"{self.remote}{bucket}")

    def objects(self, bucket):
        """{key: bytes} of every object in the bucket, as the backend holds it."""
        keys = self.rclone("lsf", "-R", "--files-only", f"{self.remote}{bucket}").decode().split()
        return {k: self.rclone("cat", f"{self.remote}{bucket}/{k}") for k in keys}


class LocalVolume(Backend):
    """Local mode: the storage Deployment serves its PVC, a directory the kubelet double keeps."""

    mode = "local"

    def __init__(self, work):
        pass

    def attach(self, c, ns, bucket):
        # rclone's local backend reads the volume; the buckets are the server's to create
        self.remote = os.path.join(c.dir, "kubelet", "pvcs", ns, f"{RELEASE}-minio") + "/"

    def helm_args(self):
        return ["-f", values_file("local.yaml")]

    def rclone_env(self):
        return {}

    def stop(self):
        pass


class SeaweedS3(Backend):
    """SeaweedFS `weed mini`: an S3 server other than rclone, every port free and on 127.0.0.1."""

    remote, mode = ":s3:", "s3gateway"
    KEYS = ("SeaweedKey1", "SeaweedSecret1234567890")

    def __init__(self, work):
        d = os.path.join(work, "seaweed")
        os.makedirs(os.path.join(d, "data"))
        config = os.path.join(d, "s3.json")
        with open(config, "w", encoding="utf-8") as f:
            json.dump({"identities": [{"name": "gateway", "credentials": [
                {"accessKey": self.KEYS[0], "secretKey": self.KEYS[1]}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        self.port = free_port()
        ports = [f"-{flag}={free_port()}" for flag in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port.grpc", "admin.port", "admin.port.grpc", "debug.port", "s3.debug.port")]
        self.proc = spawn(["weed", "mini", f"-dir={d}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                           "-master.telemetry=false", "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0",
                           "-s3.port.lance=0", f"-s3.config={config}", f"-s3.port={self.port}", *ports],
                          os.path.join(work, "seaweed.log"))
        wait_port(self.port, self.proc, "weed mini (S3)")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def helm_args(self):
        # the storage service's own keys are left empty: the chart generates them
        return ["-f", values_file("s3gateway.yaml"), "--set", "minio.accessKey=", "--set", "minio.secretKey=",
                "--set", f"minio.s3gateway.serviceEndpoint={self.endpoint}",
                "--set", f"minio.s3gateway.accessKey={self.KEYS[0]}",
                "--set", f"minio.s3gateway.secretKey={self.KEYS[1]}"]

    def rclone_env(self):
        return {"RCLONE_S3_PROVIDER": "Other", "RCLONE_S3_ENDPOINT": self.endpoint,
                "RCLONE_S3_ACCESS_KEY_ID": self.KEYS[0], "RCLONE_S3_SECRET_ACCESS_KEY": self.KEYS[1]}

    def stop(self):
        stop(self.proc)


class AzuriteBlob(Backend):
    """Azurite, the Azure Blob emulator, with its well-known development account."""

    remote, mode = ":azureblob:", "azuregateway"

    def __init__(self, work):
        self.port = free_port()
        self.proc = spawn(["azurite-blob", "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                           "-l", os.path.join(work, "azurite"), "--disableTelemetry", "--skipApiVersionCheck", "-s"],
                          os.path.join(work, "azurite.log"))
        wait_port(self.port, self.proc, "azurite")
        self.endpoint = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def helm_args(self):
        # in Azure mode the storage keys are the storage account's name and key
        return ["-f", values_file("azuregateway.yaml"), "--set", f"minio.azuregateway.serviceEndpoint={self.endpoint}",
                "--set", f"minio.accessKey={AZURITE_ACCOUNT}", "--set", f"minio.secretKey={AZURITE_KEY}"]

    def rclone_env(self):
        return {"RCLONE_AZUREBLOB_ACCOUNT": AZURITE_ACCOUNT, "RCLONE_AZUREBLOB_KEY": AZURITE_KEY,
                "RCLONE_AZUREBLOB_ENDPOINT": self.endpoint}

    def stop(self):
        stop(self.proc)


# ---- graph servers: real ones, their tools in the stand-in images -------------------------------


class EtcdStore:
    values = "etcd.yaml"
    image, build = ETCD, staticmethod(images.build_etcd_image)
    bucket, prefix = "sts-e2e-etcd", ""
    supports_force = False  # etcdctl snapshot restore never overwrites a data dir

    def __init__(self, work):
        self.work = work
        self.log = open(os.path.join(work, "etcd.log"), "w", encoding="utf-8")  # noqa: SIM115
        self.proc, self.endpoint = start_etcd(os.path.join(work, "etcd-data"), self.log)
        env = dict(os.environ, ETCDCTL_API="3")
        for i in range(200):
            subprocess.run(["etcdctl", "--endpoints", self.endpoint, "put", f"/registry/vertices/{i:04d}",
                            json.dumps({"id": i, "blob": hashlib.md5(str(i).encode()).hexdigest()})],
                           check=True, capture_output=True, env=env)

    def extra_env(self):
        return [{"name": "ETCDCTL_API", "value": "3"}, {"name": "ETCDCTL_ENDPOINTS", "value": self.endpoint}]

    def prepare(self, c, ns):
        """The restore target the values mount; returns what it created (not the release's)."""
        pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "etcd-restore", "namespace": ns},
               "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}
        c.kubectl("create", "-f", "-", input=json.dumps(pvc))
        return ["PersistentVolumeClaim/etcd-restore"]

    def source(self):
        return etcd_digest(self.endpoint)

    def restored(self, c, ns):
        """The keys of the restored data dir, served by a second etcd on a copy of it."""
        data = os.path.join(c.dir, "kubelet", "pvcs", ns, "etcd-restore", "data")
        if not os.path.isdir(data):
            return None
        copy = tempfile.mkdtemp(dir=self.work, prefix="etcd-restored-")
        shutil.copytree(data, os.path.join(copy, "data"))
        with open(os.path.join(copy, "etcd.log"), "w", encoding="utf-8") as log:
            proc, endpoint = start_etcd(os.path.join(copy, "data"), log)
            try:
                return etcd_digest(endpoint)
            finally:
                proc.terminate()
                proc.wait()

    def target_bytes(self, c, ns):
        """The restore target as bytes on the volume (starting etcd on it would change it)."""
        data = os.path.join(c.dir, "kubelet", "pvcs", ns, "etcd-restore", "data")
        h = hashlib.sha256()
        for d, _, files in sorted(os.walk(data)):
            for name in sorted(files):
                with open(os.path.join(d, name), "rb") as f:
                    h.update(os.path.relpath(os.path.join(d, name), data).encode() + b"\0" + f.read())
        return h.hexdigest()

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


class PostgresStore:
    """PostgreSQL 15 (Debian's, run as the postgres user): `graph` is the source, `restored` the
    target; the stand-in image runs pg_dump / pg_restore / psql against it over TCP."""

    values = "postgres.yaml"
    image, build = POSTGRES, staticmethod(images.build_postgres_image)
    bucket, prefix = "sts-e2e-postgres", "stackgraph/postgres/"
    supports_force = True

    def __init__(self, work):
        d = os.path.join(work, "postgres")
        os.makedirs(d)
        shutil.chown(d, "postgres", "postgres")
        self.bin = images.PG_BIN
        subprocess.run(["runuser", "-u", "postgres", "--", f"{self.bin}/initdb", "-A", "trust", "-U", "postgres",
                        "-D", f"{d}/data"], check=True, capture_output=True)
        self.port = free_port()
        self.proc = spawn(["runuser", "-u", "postgres", "--", f"{self.bin}/postgres", "-D", f"{d}/data",
                           "-h", "127.0.0.1", "-p", str(self.port), "-k", d], os.path.join(work, "postgres.log"))
        wait_port(self.port, self.proc, "postgres")
        wait_for(lambda: subprocess.run([f"{self.bin}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                                        check=False).returncode == 0, 60, "postgres to accept connections")
        for db in ("graph", "restored"):
            self.psql("postgres", f"create database {db}")
        with open(os.path.join(ROOT, "tests", "e2e", "graph-postgres.sql"), encoding="utf-8") as f:
            self.psql("graph", f.read())

    def psql(self, db, sql):
        p = subprocess.run([f"{self.bin}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                            "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql],
                           capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise AssertionError(f"psql {db}: {sql.strip()[:200]}: {p.stderr}")
        return p.stdout

    def extra_env(self):
        return [{"name": "PGHOST", "value": "127.0.0.1"}, {"name": "PGPORT", "value": str(self.port)},
                {"name": "PGUSER", "value": "postgres"}]

    def prepare(self, c, ns):
        return []

    def digest(self, db):
        """sha256 of a plain dump (schema and data) of the database, and its vertex count."""
        dump = subprocess.run([f"{self.bin}/pg_dump", "--format=plain", "--no-owner", "-h", "127.0.0.1", "-p",
                               str(self.port), "-U", "postgres", "-d", db], capture_output=True, text=True,
                              check=True).stdout
        # PostgreSQL >= 15.14 writes a random \restrict key into every plain dump
        lines = [ln for ln in dump.splitlines() if not ln.startswith(("\\restrict", "\\unrestrict"))]
        tables = self.psql(db, "select count(*) from pg_tables where schemaname = 'public'").strip()
        rows = self.psql(db, "select count(*) from vertices").strip() if tables != "0" else "0"
        return sha256("\n".join(lines).encode()), int(rows)

    def source(self):
        return self.digest("graph")

    def restored(self, c, ns):
        return self.digest("restored")

    def target_bytes(self, c, ns):
        return self.digest("restored")

    def tamper(self):
        self.psql("restored", "update vertices set label = 'tampered' where id < 10; delete from edges where src < 50")

    def stop(self):
        stop(self.proc, signal.SIGINT)  # PostgreSQL's "fast" shutdown


# ---- the tests ---------------------------------------------------------------------------------


class StorageMode:
    """One release in one storage mode with one graph server; subclasses pick the two."""

    backend_class = store_class = None
    # The other graph server (SecondStore), run through the same release after a `helm upgrade`
    # to its values: each storage mode meets both graph servers for the price of one install.
    second_store_class = None
    ns = ""

    @classmethod
    def setUpClass(cls):
        images.build_jobs_image(JOBS)
        images.build_rclone_image(RCLONE)
        for store_class in filter(None, (cls.store_class, cls.second_store_class)):
            store_class.build(store_class.image)
        cls.work = tempfile.mkdtemp(prefix=f"sts-modes-{cls.ns}-")
        os.chmod(cls.work, 0o755)  # the postgres user reaches its data dir below it
        cls.cleanups = []
        try:
            cls.backend = cls.backend_class(cls.work)
            cls.cleanups.append(cls.backend.stop)
            cls.store = cls.store_class(cls.work)
            cls.cleanups.append(cls.store.stop)
            if cls.second_store_class:
                cls.second_store = cls.second_store_class(cls.work)
                cls.cleanups.append(cls.second_store.stop)
            # The storage pod binds the Service port on the host: one release on this machine at a time.
            wait_for(lambda: not port_open(STORAGE_PORT), 300,
                     f"127.0.0.1:{STORAGE_PORT} to be free (another storage service of a cluster test runs)")
            cls.c = Cluster("1.34", kubelet=True)
            cls.cleanups.append(cls.c.stop)
            cls.monitor_port = free_port()  # the monitor runs on the host network too
            cls.c.kubectl("create", "namespace", cls.ns)
            # objects of the test itself in the namespace (not the release's, kept by uninstall)
            cls.test_objects = cls.store.prepare(cls.c, cls.ns)
            cls.backend.attach(cls.c, cls.ns, cls.store.bucket)
            cls.install = cls.c.helm("install", RELEASE, *cls.chart_args(), "--wait", "--timeout", "120s", timeout=200)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def chart_args(cls, store=None):
        store = store or cls.store
        return [os.path.join(ROOT, "chart"), "-n", cls.ns, "-f", values_file("common.yaml"),
                "-f", values_file(store.values), *cls.backend.helm_args(),
                "--set-json", f"backup.stackGraph.extraEnv={json.dumps(store.extra_env())}",
                "--set", f"backup.monitor.port={cls.monitor_port}"]

    @classmethod
    def tearDownClass(cls):
        try:
            for fn in reversed(cls.cleanups):
                try:
                    fn()
                except Exception as e:  # noqa: BLE001  the next cleanup still runs
                    print(f"cleanup {fn.__qualname__} failed: {e!r}")
        finally:
            shutil.rmtree(cls.work, ignore_errors=True)

    # -- helpers

    def script(self, name, *args):
        return self.c.run("bash", os.path.join(ROOT, "scripts", "restore", name), "-n", self.ns, *args, check=False,
                          timeout=300)

    def listed(self):
        p = self.script("list-stackgraph-backups.sh", "-o", "json")
        self.assertEqual(p.returncode, 0, p.stderr)
        return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("[")][0])

    def backup(self, job):
        self.c.kubectl("create", "job", f"--from=cronjob/{RELEASE}-sts-backup-stackgraph-backup", job, "-n", self.ns)
        p = self.c.kubectl("wait", f"job/{job}", "-n", self.ns, "--for=condition=complete", "--timeout=180s",
                           check=False, timeout=200)
        logs = self.c.kubectl("logs", f"job/{job}", "-n", self.ns, "-c", "backup", check=False).stdout
        self.assertEqual(p.returncode, 0, f"backup job {job} did not complete:\n{p.stderr}\n{logs}")

    def storage_settled(self):
        """After an upgrade: one storage pod, running and ready, none terminating (a rolled pod's
        predecessor may still hold the port), and the port answering."""
        pods = json.loads(self.c.kubectl("get", "pods", "-n", self.ns, "-l", "app.kubernetes.io/component=minio",
                                         "-o", "json").stdout)["items"]
        return (len(pods) == 1 and not pods[0]["metadata"].get("deletionTimestamp")
                and pods[0]["status"].get("phase") == "Running"
                and all(cs.get("ready") for cs in pods[0]["status"].get("containerStatuses", []))
                and port_open(STORAGE_PORT))

    def storage_pod(self):
        pods = json.loads(self.c.kubectl("get", "pods", "-n", self.ns, "-l", "app.kubernetes.io/component=minio",
                                         "-o", "json").stdout)["items"]
        running = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
        return running[0] if len(running) == 1 else None

    # -- the cycle

    def test_backup_list_restore_refuse(self):
        self.assertNotIn("unknown field", self.install.stderr)
        self.cycle(self.store, "first-backup")

    def cycle(self, store, job):
        """Backup, list, restore, refusal (and, where the importer can overwrite, forced and
        corrupted restores) of one graph server through the installed release."""
        c = self.c
        deploy = json.loads(c.kubectl("get", "deploy", f"{RELEASE}-minio", "-n", self.ns, "-o", "json").stdout)
        self.assertEqual(deploy["metadata"]["labels"]["sts-backup.io/storage-mode"], self.backend.mode)
        # 1. helm test: the storage service (a gateway, or the volume's server) answers S3 with the
        #    Secret's keys (no --logs: the chart deletes the succeeded test pod before helm reads them)
        p = c.helm("test", RELEASE, "-n", self.ns, "--timeout", "120s", check=False, timeout=150)
        self.assertEqual(p.returncode, 0, f"helm test failed:\n{p.stdout}\n{p.stderr}")
        # 2. the scheduled backup, started from its CronJob; listed by the script
        self.backup(job)
        rows = self.listed()
        self.assertEqual(len(rows), 1, rows)
        row = rows[0]
        # 3. the bytes are in the backend itself (the volume, SeaweedFS or Azurite, read directly)
        objects = self.backend.objects(store.bucket)
        key = store.prefix + row["name"]
        self.assertIn(key, objects, f"{key} not in the backend: {sorted(objects)}")
        self.assertEqual(len(objects[key]), row["size"])
        self.assertEqual(sha256(objects[key]), row["sha256"])
        # 4. restore into the empty target: the data equals the source
        source = store.source()
        p = self.script("restore-stackgraph-backup.sh", row["name"])
        self.assertEqual(p.returncode, 0, f"{p.stdout}\n{p.stderr}")
        self.assertEqual(store.restored(c, self.ns), source)
        # 5. the target is not empty now: refused (exit 3), nothing touched
        before = store.target_bytes(c, self.ns)
        p = self.script("restore-stackgraph-backup.sh", row["name"])
        self.assertEqual(p.returncode, 3, f"{p.stdout}\n{p.stderr}")
        self.assertEqual(store.target_bytes(c, self.ns), before)
        # 6. forced over a tampered target: the backed-up data is back
        if store.supports_force:
            store.tamper()
            self.assertNotEqual(store.restored(c, self.ns), source)
            p = self.script("restore-stackgraph-backup.sh", row["name"], "-force")
            self.assertEqual(p.returncode, 0, f"{p.stdout}\n{p.stderr}")
            self.assertEqual(store.restored(c, self.ns), source)
            # 7. one byte of the backup changed in the backend: refused as an integrity failure
            #    (exit 4) even with -force, before the importer sees a byte; the target keeps its data
            corrupt = bytearray(objects[key])
            corrupt[len(corrupt) // 2] ^= 0xFF
            self.backend.rclone("rcat", f"{self.backend.remote}{store.bucket}/{key}", data=bytes(corrupt))
            p = self.script("restore-stackgraph-backup.sh", row["name"], "-force")
            self.assertEqual(p.returncode, 4, f"{p.stdout}\n{p.stderr}")
            self.assertEqual(store.restored(c, self.ns), source)


class SecondStore:
    """The other graph server through the same release: `helm upgrade` to its values, the cycle
    again, and back to the first one for the tests after this one."""

    def test_backup_list_restore_refuse_second_store(self):
        store = self.second_store
        type(self).test_objects += store.prepare(self.c, self.ns)
        self.backend.attach(self.c, self.ns, store.bucket)
        try:
            self.c.helm("upgrade", RELEASE, *self.chart_args(store), "--wait", "--timeout", "120s", timeout=200)
            wait_for(self.storage_settled, 90, "one storage pod, ready and listening")
            self.cycle(store, "second-store-backup")
        finally:
            # back to the first graph server for the tests after this one
            self.c.helm("upgrade", RELEASE, *self.chart_args(), "--wait", "--timeout", "120s", timeout=200)
            wait_for(self.storage_settled, 90, "one storage pod, ready and listening")


class S3GatewayPostgres(SecondStore, StorageMode, unittest.TestCase):
    """S3 gateway mode (rclone in front of SeaweedFS) with PostgreSQL, then etcd, as the graph
    server; the storage keys are generated by the chart."""

    backend_class, store_class, second_store_class = SeaweedS3, PostgresStore, EtcdStore
    ns = "s3gw"

    def secret(self):
        return json.loads(self.c.kubectl("get", "secret", f"{RELEASE}-minio", "-n", self.ns, "-o",
                                         "json").stdout)["data"]

    def test_upgrade_keeps_generated_keys_then_uninstall_cleans_up(self):
        c = self.c
        keys = self.secret()
        access, secret = (base64.b64decode(keys[k]).decode() for k in ("accesskey", "secretkey"))
        self.assertRegex(access, r"^[A-Za-z0-9]{20}$")
        self.assertRegex(secret, r"^[A-Za-z0-9]{40}$")
        # Without the cluster's Secret (helm template: no lookup) the chart draws new keys: the ones
        # kept below come from the cluster, not from a fixed value.
        drawn = c.helm("template", RELEASE, *self.chart_args(), "--show-only", "templates/storage-secret.yaml").stdout
        self.assertNotIn(keys["accesskey"], drawn)
        old_pod = self.storage_pod()
        self.assertIsNotNone(old_pod)
        backups = len(self.listed())
        # An upgrade that rolls the storage pod (a new pod annotation) and names the next backup
        # differently (old-backup.yaml: a fixed, old name), so it cannot meet the first one's name.
        c.helm("upgrade", RELEASE, *self.chart_args(), "-f", values_file("old-backup.yaml"),
               "--set", "minio.podAnnotations.rolled=yes", "--wait", "--timeout", "120s", timeout=200)
        self.assertEqual(self.secret(), keys, "helm upgrade changed the generated storage keys")
        wait_for(lambda: (self.storage_pod() or {}).get("metadata", {}).get("uid") not in
                 (None, old_pod["metadata"]["uid"]), 60, "the storage pod to be replaced")
        wait_for(lambda: port_open(STORAGE_PORT), 60, "the new storage pod to listen")
        # the new storage pod and a new backup pod both take the kept keys from the Secret
        self.backup("after-upgrade")
        names = [row["name"] for row in self.listed()]
        self.assertEqual(len(names), backups + 1)
        self.assertIn("sts-backup-20200101-0300.graph", names)
        in_backend = set(self.backend.objects(self.store_class.bucket))
        # uninstall: nothing of the release is left, the storage server is gone, the backups stay
        c.helm("uninstall", RELEASE, "-n", self.ns, "--wait", "--timeout", "120s", timeout=200)
        self.assertEqual(c.helm("list", "-n", self.ns, "-a", "-q").stdout.strip(), "")
        kinds = ("pods,services,deployments,replicasets,statefulsets,jobs,cronjobs,secrets,configmaps,"
                 "serviceaccounts,roles,rolebindings,persistentvolumeclaims,leases,events.events.k8s.io")
        # what the namespace holds by itself (its default ServiceAccount and root CA ConfigMap)
        # and what the test created there
        own = sorted(["ConfigMap/kube-root-ca.crt", "ServiceAccount/default", *self.test_objects])

        def left():
            items = json.loads(c.kubectl("get", kinds, "-n", self.ns, "-o", "json").stdout)["items"]
            return sorted(f"{o['kind']}/{o['metadata']['name']}" for o in items)
        # pods end after their grace period (the cascade from the Deployments runs in the background)
        try:
            wait_for(lambda: left() == own, 90, "the release's objects to go")
        except AssertionError:
            self.assertEqual(left(), own, "helm uninstall left objects of the release behind")
        wait_for(lambda: not port_open(STORAGE_PORT), 60, "the storage server to stop")
        self.assertTrue(in_backend)
        self.assertEqual(set(self.backend.objects(self.store_class.bucket)), in_backend,
                         "helm uninstall changed the backups in the backend")


class AzureGatewayEtcd(SecondStore, StorageMode, unittest.TestCase):
    """Azure gateway mode (rclone in front of Azurite) with etcd, then PostgreSQL, as the graph
    server."""

    backend_class, store_class, second_store_class = AzuriteBlob, EtcdStore, PostgresStore
    ns = "azgw"


class LocalPostgres(StorageMode, unittest.TestCase):
    """Local mode (the PVC) with PostgreSQL (test_e2e.py runs local mode with etcd)."""

    backend_class, store_class = LocalVolume, PostgresStore
    ns = "local"


if __name__ == "__main__":
    unittest.main()
