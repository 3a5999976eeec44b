"""Pod-runner end-to-end test of the chart, the job binaries and the storage service.

No Kubernetes API server can run here, so this plays the kubelet: it takes the Pods that the
rendered CronJobs and Jobs would create (CronJob -> .spec.jobTemplate.spec.template, Job ->
.spec.template; the restore/list Jobs come from the job-*.json keys of the ConfigMap labelled
sts-backup.io/job-templates=true, filled in by the restore scripts' own `lib::render_template`)
and runs their containers, init containers first, as local processes:

- command/args/env exactly as rendered; secretKeyRef/configMapKeyRef resolved from the rendered
  Secret/ConfigMap; Kubernetes `$(VAR)` expansion in order;
- every volumeMount (Secret, emptyDir, PVC, ephemeral) becomes a directory, and the absolute paths
  of the container (command, args, env) are rewritten to it;
- images map to local programs: sts-backup/jobs -> target/debug/, rclone/rclone -> rclone from
  .tools, the graph-server image -> a real store's tools (PostgreSQL 15, etcd 3.4);
- the storage Service URL (http://<release>-minio:9000) maps to the local storage process;
- when run as root, each container runs with the pod's runAsUser/runAsGroup/fsGroup, volume
  files get the Kubernetes owners and modes (Secret defaultMode, emptyDir 0777), and the working
  directory is not writable (a stand-in for readOnlyRootFilesystem).

The storage service runs the way the chart renders it with the default engine (`auto`: rclone
serve s3 here) in all three modes: local path, S3 gateway in front of a second rclone S3 server,
Azure gateway in front of Azurite; the helm test pod runs first against it. In each mode and
for each store (PostgreSQL: pg_dump/pg_restore streamed, under a key prefix, uncompressed; etcd:
snapshot through the scratch `{file}`, zstd): backup -> second, older backup ->
list -> prune (retention CronJob) -> restore, with the data checked against the backed-up state and
the objects checked in the backend itself (not through the gateway); then a restore into the
now non-empty target without force must exit 3 and leave it untouched, and (PostgreSQL) a forced
restore over a tampered target must bring the backed-up data back.

Run through tests/e2e/run.sh. Prints one line per check and ends with `e2e: N passed, M failed`.
Arguments select modes/stores by name (e.g. `local postgres`).
"""

import base64
import filecmp
import hashlib
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "chart"))
import chartlib as chart  # noqa: E402 - helpers shared with the chart tests (tests/chart/chartlib.py)

ROOT = HERE.parents[1]
VALUES = HERE / "values"
LIB_SH = ROOT / "scripts" / "restore" / "lib.sh"
JOBS_BIN = ROOT / "target" / "debug"
RELEASE = "e2e"
AZURITE_ACCOUNT = chart.AZURITE_ACCOUNT
AZURITE_KEY = chart.AZURITE_KEY
PG_BIN = Path("/usr/lib/postgresql/15/bin")
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
OLD_BACKUP = "sts-backup-20200101-0300.graph"
IS_ROOT = os.geteuid() == 0
POD_TIMEOUT = 180

WORK = Path(tempfile.mkdtemp(prefix="sts-e2e."))
WORK.chmod(0o755)  # pod users (65532, 65534) must reach their volumes below it

POD_NUMBERS = itertools.count(1)
# an absolute path at the start of a value or after a space, `=`, quote or comma
ABS_PATH = re.compile(r"(?<![^\s='\",])/[A-Za-z0-9._-][^\s'\",:;]*")
PROCS = []  # every long-running process started here, stopped by stop_all()


# ------------------------------------------------------------------------------------------
# processes


def spawn(argv, log_name, env=None, user=None):
    """Starts a server; its output goes to WORK/logs/<log_name>.log."""
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    log = open(logs / f"{log_name}.log", "w")
    if user and IS_ROOT:
        argv = ["runuser", "-u", user, "--"] + list(argv)
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_path = logs / f"{log_name}.log"
    return track(proc)


def track(proc):
    """Remembers a long-running process for stop_all(), and its pid in $E2E_PIDFILE so run.sh can
    stop it even if this runner dies without cleaning up."""
    PROCS.append(proc)
    pidfile = os.environ.get("E2E_PIDFILE")
    if pidfile:
        with open(pidfile, "a") as f:
            f.write(f"{proc.pid}\n")
    return proc


def stop(proc, sig=signal.SIGTERM):
    """Stops a process started here (and, for spawn()ed ones, its process group)."""
    if proc is None or proc.poll() is not None:
        return
    group = getattr(proc, "log_path", None) is not None  # spawn() made it a session leader
    try:
        os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        proc.wait(timeout=10)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
        proc.wait(timeout=10)


def stop_all():
    for proc in reversed(PROCS):
        stop(proc)


def wait_port(port, proc, what):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"{what} exited: {proc.log_path.read_text()[-2000:]}")
            time.sleep(0.1)
    raise AssertionError(f"{what} is not listening on {port}")


def run(argv, env=None, check=True, **kw):
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, **kw)
    if check:
        assert proc.returncode == 0, f"{argv[0]} exited {proc.returncode}: {proc.stderr[-2000:]}"
    return proc


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def tree_digest(path):
    """sha256 over the relative paths and contents of every file below `path`."""
    h = hashlib.sha256()
    for p in sorted(Path(path).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(path)).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


# ------------------------------------------------------------------------------------------
# rendering


def render(value_files, sets_json=None):
    extra = []
    for key, value in (sets_json or {}).items():
        extra += ["--set-json", f"{key}={json.dumps(value)}"]
    return chart.helm_template(values=[VALUES / f for f in value_files], release=RELEASE, extra=extra)


def job_template_configmap(rendered):
    """The ConfigMap the restore scripts find by label, as they find it."""
    found = [d for d in rendered.all("ConfigMap")
             if d["metadata"].get("labels", {}).get("sts-backup.io/job-templates") == "true"]
    assert len(found) == 1, f"expected one job-template ConfigMap, found {len(found)}"
    return found[0]


def filled_job(rendered, key, **placeholders):
    """A job-*.json template filled by scripts/restore/lib.sh `lib::render_template`, parsed."""
    template = job_template_configmap(rendered)["data"][key]
    argv = ["bash", "-c", 'source "$0"; lib::render_template "$@"', str(LIB_SH), template]
    argv += [f"{k}={v}" for k, v in placeholders.items()]
    proc = run(argv)
    job = json.loads(proc.stdout)
    left = re.findall(r'"__[A-Z_]+__"', proc.stdout)
    assert not left, f"placeholders left in {key}: {left}"
    assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0
    return job


def pod_template(obj):
    """The Pod template a CronJob or Job would create (a bare Pod, e.g. the helm test, is its own)."""
    if obj["kind"] == "Pod":
        return {"metadata": obj["metadata"], "spec": obj["spec"]}
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    if obj["kind"] == "Job":
        return obj["spec"]["template"]
    raise AssertionError(f"{obj['kind']} creates no Job pods")


# ------------------------------------------------------------------------------------------
# the pod-runner


class Image:
    """What a container image provides locally: its PATH and directories of its filesystem."""

    def __init__(self, path, dirs=None):
        self.path = path
        self.dirs = dirs or {}


class ContainerResult:
    def __init__(self, name, argv, rc, stdout, stderr):
        self.name, self.argv, self.rc, self.stdout, self.stderr = name, argv, rc, stdout, stderr

    def describe(self):
        return (f"container {self.name} exited {self.rc}\n  argv: {self.argv}\n"
                f"  stderr (tail): {self.stderr[-3000:]}\n  stdout (tail): {self.stdout[-1500:]}")


class PodResult:
    def __init__(self, name, pod_dir):
        self.name, self.pod_dir, self.containers, self.mounts = name, pod_dir, [], {}

    @property
    def main(self):
        return self.containers[-1]

    @property
    def rc(self):
        return self.main.rc

    def expect(self, rc):
        assert self.containers and self.rc == rc, (
            f"pod {self.name}: expected exit {rc}\n" + "\n".join(c.describe() for c in self.containers))
        return self


class Node:
    """Runs pods of one rendered release: images, the storage Service and PVCs map to local things."""

    def __init__(self, rendered, storage_port, pvc_root, images, pods_dir):
        self.rendered = rendered
        self.pods_dir = Path(pods_dir)
        self.storage_port = storage_port
        self.pvc_root = Path(pvc_root)
        self.images = images  # list of (regex on the image reference, Image)
        self.services = [s["metadata"]["name"] for s in rendered.all("Service")]
        assert self.services, "no Service rendered"

    # --- objects the kubelet reads
    def secret(self, name):
        for s in self.rendered.all("Secret"):
            if s["metadata"]["name"] == name:
                return {k: base64.b64decode(v) for k, v in s.get("data", {}).items()}
        return None

    def configmap(self, name):
        for c in self.rendered.all("ConfigMap"):
            if c["metadata"]["name"] == name:
                return {k: v.encode() for k, v in c.get("data", {}).items()}
        return None

    def image(self, ref):
        for pattern, image in self.images:
            if re.fullmatch(pattern, ref):
                return image
        raise AssertionError(f"no local mapping for image {ref!r}")

    # --- volumes
    def volume_dir(self, vol, pod_dir, fs_group):
        path = pod_dir / "volumes" / vol["name"]
        if "emptyDir" in vol or "ephemeral" in vol:
            path.mkdir(parents=True)
            own(path, 0o777, fs_group)
        elif "persistentVolumeClaim" in vol:
            path = self.pvc_root / vol["persistentVolumeClaim"]["claimName"]
            if not path.exists():
                path.mkdir(parents=True)
                own(path, 0o2775, fs_group)
        elif "secret" in vol or "configMap" in vol:
            source = vol.get("secret") or vol.get("configMap")
            name = source.get("secretName") or source.get("name")
            data = self.secret(name) if "secret" in vol else self.configmap(name)
            if data is None:
                assert source.get("optional"), f"volume {vol['name']}: {name} is not rendered"
                data = {}
            path.mkdir(parents=True)
            own(path, 0o755, None)
            items = source.get("items") or [{"key": k, "path": k} for k in sorted(data)]
            for item in items:
                assert item["key"] in data, f"volume {vol['name']}: key {item['key']} missing in {name}"
                f = path / item["path"]
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data[item["key"]])
                own(f, item.get("mode", source.get("defaultMode", 0o644)), fs_group)
        else:
            raise AssertionError(f"volume type not supported by the pod-runner: {vol}")
        return path

    # --- env and paths
    def resolve_env(self, c):
        """Env as the kubelet builds it: configMapKeyRef values become literal values (with `$`
        escaped, since referenced values are never expanded), then chartlib.resolve_env resolves
        secretKeyRef and expands $(VAR) in order."""
        entries = []
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("configMapKeyRef")
            if ref:
                data = self.configmap(ref["name"]) or {}
                if ref["key"] not in data:
                    assert ref.get("optional"), f"missing {ref}"
                    continue
                e = {"name": e["name"], "value": data[ref["key"]].decode().replace("$", "$$")}
            else:
                assert "value" in e or "secretKeyRef" in e.get("valueFrom", {}), f"unsupported env {e}"
            entries.append(e)
        return chart.resolve_env({"env": entries}, self.rendered)

    def rewriter(self, path_map):
        """Maps in-container absolute paths (longest first, whole path components) and the storage
        Service URL to local ones."""
        prefixes = sorted(path_map, key=len, reverse=True)
        path_re = re.compile(r"(?<![^\s='\",])(" + "|".join(re.escape(p.rstrip("/")) for p in prefixes)
                             + r")(?=/|$|[\s'\",:;])") if prefixes else None
        svc_re = re.compile(r"http://(" + "|".join(re.escape(s) for s in self.services)
                            + r")(\.[a-z0-9.-]+)?:9000")

        def rewrite(value):
            value = svc_re.sub(f"http://127.0.0.1:{self.storage_port}", value)
            if path_re:
                value = path_re.sub(lambda m: str(path_map[m.group(1)] if m.group(1) in path_map
                                                  else path_map[m.group(1) + "/"]), value)
            return value
        return rewrite

    # --- the pod
    def run_pod(self, template, name, inspect=None):
        """Runs the pod's containers in order; `inspect(result)` sees the volumes before the
        emptyDirs go away with the pod (PVCs stay)."""
        spec = template["spec"]
        pod_dir = self.pods_dir / f"{next(POD_NUMBERS):03d}-{name}"
        pod_dir.mkdir(parents=True)
        pod_dir.chmod(0o755)
        psc = spec.get("securityContext") or {}
        volumes = {v["name"]: self.volume_dir(v, pod_dir, psc.get("fsGroup")) for v in spec.get("volumes", [])}
        cwd = pod_dir / "cwd"  # the image's working directory, read-only like its root filesystem
        cwd.mkdir()
        cwd.chmod(0o555)
        result = PodResult(name, pod_dir)
        assert spec.get("restartPolicy") == "Never", spec.get("restartPolicy")
        try:
            for c in spec.get("initContainers", []) + spec["containers"]:
                res = self.run_container(c, psc, volumes, cwd, result)
                result.containers.append(res)
                if res.rc != 0:  # restartPolicy Never: a failed init container fails the pod
                    break
            if inspect:
                inspect(result)
        finally:
            for v in spec.get("volumes", []):
                if "emptyDir" in v or "ephemeral" in v:
                    shutil.rmtree(volumes[v["name"]])
        return result

    def run_container(self, c, psc, volumes, cwd, result):
        image = self.image(c["image"])
        path_map = dict(image.dirs)
        for m in c.get("volumeMounts", []):
            assert m["name"] in volumes, f"{c['name']}: mount of undeclared volume {m['name']}"
            path_map[m["mountPath"]] = volumes[m["name"]] / m.get("subPath", "")
            result.mounts[(c["name"], m["mountPath"])] = path_map[m["mountPath"]]
        rewrite = self.rewriter(path_map)
        env = self.resolve_env(c)
        assert "command" in c, f"{c['name']}: no command (the image entrypoint is unknown here)"
        argv = [chart.expand_k8s_vars(a, env) for a in c["command"] + c.get("args", [])]
        # Every absolute path the container is given must be a volume or a mapped image dir:
        # anything else would silently be the host's file here (and is the read-only root
        # filesystem of the image in the cluster).
        unmapped = sorted({p for v in argv + list(env.values()) for p in ABS_PATH.findall(v)
                           if not p.startswith(("/dev/", "/proc/"))
                           and not any(p == m.rstrip("/") or p.startswith(m.rstrip("/") + "/") for m in path_map)})
        assert not unmapped, f"{c['name']}: paths outside every volume and image mapping: {unmapped}"
        argv = [rewrite(a) for a in argv]
        env = {k: rewrite(v) for k, v in env.items()}
        # The container's temp dir is its /tmp: the volume there, or the read-only root filesystem.
        tmp = path_map.get("/tmp")
        if tmp is None:
            tmp = result.pod_dir / "cwd"
            assert (c.get("securityContext") or {}).get("readOnlyRootFilesystem"), f"{c['name']}: no /tmp volume"
        env.setdefault("TMPDIR", str(tmp))
        path = env.get("PATH", image.path)
        exe = argv[0] if argv[0].startswith("/") else shutil.which(argv[0], path=path)
        assert exe and os.access(exe, os.X_OK), f"{c['name']}: {c['command'][0]} not found in image {c['image']}"
        argv[0] = exe
        proc_env = {"PATH": image.path, **env}
        sc = {**psc, **(c.get("securityContext") or {})}
        user = {}
        if IS_ROOT and sc.get("runAsUser") is not None:
            groups = [g for g in [sc.get("fsGroup"), *(sc.get("supplementalGroups") or [])] if g is not None]
            user = {"user": sc["runAsUser"], "group": sc.get("runAsGroup", sc["runAsUser"]), "extra_groups": groups}
        if sc.get("runAsNonRoot"):
            assert user.get("user") or not IS_ROOT, f"{c['name']}: runAsNonRoot without a runAsUser"
        try:
            proc = subprocess.run(argv, env=proc_env, cwd=cwd, capture_output=True, timeout=POD_TIMEOUT, **user)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(f"{c['name']} did not finish in {POD_TIMEOUT}s: {argv}") from e
        out = ContainerResult(c["name"], argv, proc.returncode,
                              proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"))
        (result.pod_dir / f"{c['name']}.log").write_text(out.stderr + out.stdout)
        return out


def own(path, mode, group):
    """Kubernetes volume ownership: root, group fsGroup (when set) with the setgid bit on dirs."""
    if IS_ROOT and group is not None:
        os.chown(path, 0, group)
        if path.is_dir():
            mode |= 0o2000
    path.chmod(mode)


# ------------------------------------------------------------------------------------------
# storage modes: the backend behind the storage service, and a direct view of it


class LocalMode:
    name = "local"
    values = "local.yaml"

    def __init__(self):
        self.dir = WORK / "local" / "export"  # the PVC of the storage Deployment
        self.dir.mkdir(parents=True)

    def sets(self):
        return {}

    def storage_dir(self):
        return self.dir

    def objects(self, bucket):
        """Every object of the bucket as the backend holds it: {key: bytes}."""
        return files_of(self.dir / bucket)

    def close(self):
        pass


class S3GatewayMode:
    name = "s3gateway"
    values = "s3gateway.yaml"
    KEYS = ("BACKENDKEY1", "BackendSecretKey1")

    def __init__(self):
        self.dir = WORK / "s3-backend"
        self.dir.mkdir()
        self.port = chart.free_port()
        self.proc = spawn([shutil.which("rclone"), "serve", "s3", "--addr", f"127.0.0.1:{self.port}",
                           "--config", "", "--auth-key", ",".join(self.KEYS), str(self.dir)],
                          "s3-backend", env={"PATH": os.environ["PATH"], "HOME": str(WORK)})
        wait_port(self.port, self.proc, "backend rclone serve s3")

    def sets(self):
        return {"minio.s3gateway.serviceEndpoint": f"http://127.0.0.1:{self.port}",
                "minio.s3gateway.accessKey": self.KEYS[0], "minio.s3gateway.secretKey": self.KEYS[1]}

    def storage_dir(self):
        return WORK / "unused"

    def objects(self, bucket):
        return files_of(self.dir / bucket)

    def close(self):
        stop(self.proc)


class AzureGatewayMode:
    name = "azuregateway"
    values = "azuregateway.yaml"

    def __init__(self):
        self.port = chart.free_port()
        self.proc = spawn([shutil.which("azurite-blob"), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                           "-l", str(WORK / "azurite"), "--disableTelemetry", "--skipApiVersionCheck", "-s"],
                          "azurite")
        wait_port(self.port, self.proc, "azurite")
        self.endpoint = f"http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT}"

    def sets(self):
        return {"minio.azuregateway.serviceEndpoint": self.endpoint,
                "minio.accessKey": AZURITE_ACCOUNT, "minio.secretKey": AZURITE_KEY}

    def storage_dir(self):
        return WORK / "unused"

    def objects(self, bucket):
        """The blobs of the container, read from Azurite directly (not through the gateway)."""
        dest = Path(tempfile.mkdtemp(dir=WORK, prefix="azure-view."))
        env = {"PATH": os.environ["PATH"], "HOME": str(WORK), "RCLONE_AZUREBLOB_ACCOUNT": AZURITE_ACCOUNT,
               "RCLONE_AZUREBLOB_KEY": AZURITE_KEY, "RCLONE_AZUREBLOB_ENDPOINT": self.endpoint}
        listing = run([shutil.which("rclone"), "lsf", "--config", "", ":azureblob:"], env=env).stdout.split()
        if f"{bucket}/" not in listing:
            return None
        run([shutil.which("rclone"), "copy", "--config", "", f":azureblob:{bucket}", str(dest)], env=env)
        found = files_of(dest)
        shutil.rmtree(dest)
        return found

    def close(self):
        stop(self.proc)


def files_of(path):
    path = Path(path)
    if not path.is_dir():
        return None
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


MODES = [LocalMode, S3GatewayMode, AzureGatewayMode]


# ------------------------------------------------------------------------------------------
# stores: the "graph server" whose export/import tools run in the backup and restore pods


class Postgres:
    name = "postgres"
    store_key = "postgresql"  # its name when declared under backup.stores
    values = "postgres.yaml"
    image = r"docker\.io/library/postgres:15"
    bucket = "sts-e2e-postgres"
    prefix = "stackgraph/postgres/"
    compression = "none"
    supports_force = True
    uses_file = False  # pg_dump/pg_restore stream through stdout/stdin

    def __init__(self):
        self.dir = WORK / "postgres"
        self.dir.mkdir()
        if IS_ROOT:
            shutil.chown(self.dir, "postgres", "postgres")
        initdb = [str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres", "-D", str(self.dir / "data")]
        run((["runuser", "-u", "postgres", "--"] if IS_ROOT else []) + initdb)
        self.port = chart.free_port()
        self.proc = spawn([str(PG_BIN / "postgres"), "-D", str(self.dir / "data"), "-h", "127.0.0.1",
                           "-p", str(self.port), "-k", str(self.dir)], "postgres", user="postgres")
        wait_port(self.port, self.proc, "postgres")

    def tool_path(self):
        return f"{PG_BIN}:{SYSTEM_PATH}"

    def pod_env(self):
        return [{"name": "PGHOST", "value": "127.0.0.1"}, {"name": "PGPORT", "value": str(self.port)},
                {"name": "PGUSER", "value": "postgres"}]

    def psql(self, db, sql):
        return run([str(PG_BIN / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                    "-p", str(self.port), "-U", "postgres", "-d", db, "-c", sql]).stdout

    def reset(self):
        """Source `graph` with data v1, empty target `restored`."""
        for db in ("graph", "restored"):
            self.psql("postgres", f"drop database if exists {db}")
            self.psql("postgres", f"create database {db}")
        self.psql("graph", (HERE / "graph-postgres.sql").read_text())

    def mutate_source(self):
        self.psql("graph", "insert into vertices values (900001, 'new', null, null); delete from edges where src < 100")

    def tamper_target(self):
        self.psql("restored", "update vertices set label = 'tampered' where id < 10")

    def digest(self, which, pvc_root=None):
        """sha256 of a plain-text dump (schema and data) of `graph` or `restored`."""
        db = {"source": "graph", "target": "restored"}[which]
        dump = run([str(PG_BIN / "pg_dump"), "--format=plain", "--no-owner", "-h", "127.0.0.1", "-p",
                    str(self.port), "-U", "postgres", "-d", db]).stdout
        # PostgreSQL >= 15.14 writes a random \restrict key into every plain dump
        lines = [line for line in dump.splitlines() if not line.startswith(("\\restrict", "\\unrestrict"))]
        rows = self.psql(db, "select count(*) from vertices").strip() if self.has_tables(db) else "0"
        return {"sha256": sha256_bytes("\n".join(lines).encode()), "vertices": rows}

    def has_tables(self, db):
        return self.psql(db, "select count(*) from pg_tables where schemaname = 'public'").strip() != "0"

    def target_state(self, pvc_root):
        return self.digest("target")

    def close(self):
        stop(self.proc, signal.SIGINT)  # PostgreSQL's "fast" shutdown


class Etcd:
    name = "etcd"
    store_key = "etcd"
    values = "etcd.yaml"
    image = r"quay\.io/coreos/etcd:v3\.4\.23"
    bucket = "sts-e2e-etcd"
    prefix = ""
    compression = "zstd"
    supports_force = False  # etcdctl snapshot restore never overwrites a data dir
    uses_file = True  # etcdctl snapshot save/restore {file}: the scratch volume

    def __init__(self):
        self.dir = WORK / "etcd"
        self.dir.mkdir()
        self.proc, self.endpoint = self.start(self.dir / "data", "etcd-source")

    @staticmethod
    def start(data_dir, log_name):
        client, peer = chart.free_port(), chart.free_port()
        proc = spawn(["etcd", "--name", "default", "--data-dir", str(data_dir),
                      "--listen-client-urls", f"http://127.0.0.1:{client}",
                      "--advertise-client-urls", f"http://127.0.0.1:{client}",
                      "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                      "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                      "--initial-cluster", f"default=http://127.0.0.1:{peer}"], log_name,
                     env={"PATH": SYSTEM_PATH})
        wait_port(client, proc, "etcd")
        return proc, f"http://127.0.0.1:{client}"

    def tool_path(self):
        return SYSTEM_PATH

    def pod_env(self):
        return [{"name": "ETCDCTL_API", "value": "3"}, {"name": "ETCDCTL_ENDPOINTS", "value": self.endpoint}]

    def ctl(self, endpoint, *args, stdin=None):
        return run(["etcdctl", "--endpoints", endpoint, *args], input=stdin,
                   env={"PATH": SYSTEM_PATH, "ETCDCTL_API": "3"}).stdout

    def reset(self):
        self.ctl(self.endpoint, "del", "", "--prefix")
        for i in range(300):
            self.ctl(self.endpoint, "put", f"/registry/vertices/{i:04d}",
                     json.dumps({"id": i, "label": f"label-{i % 7}", "blob": hashlib.md5(str(i).encode()).hexdigest()}))

    def mutate_source(self):
        self.ctl(self.endpoint, "put", "/registry/vertices/new", "after the first backup")
        self.ctl(self.endpoint, "del", "/registry/vertices/0000")

    def keys_digest(self, endpoint):
        out = self.ctl(endpoint, "get", "", "--prefix")
        return {"sha256": sha256_bytes(out.encode()), "keys": out.count("\n") // 2}

    def digest(self, which, pvc_root=None):
        if which == "source":
            return self.keys_digest(self.endpoint)
        data = Path(pvc_root) / "etcd-restore" / "data"
        assert data.is_dir(), f"no restored data dir at {data}"
        copy = Path(tempfile.mkdtemp(dir=WORK, prefix="etcd-restored."))
        shutil.copytree(data, copy / "data")  # etcd writes to its data dir; read a copy
        proc, endpoint = self.start(copy / "data", copy.name)
        try:
            return self.keys_digest(endpoint)
        finally:
            stop(proc)
            shutil.rmtree(copy)

    def target_state(self, pvc_root):
        """The restore target as bytes on the volume (starting etcd on it would change it)."""
        data = Path(pvc_root) / "etcd-restore" / "data"
        return tree_digest(data) if data.exists() else None

    def close(self):
        stop(self.proc)


STORES = [Postgres, Etcd]


# ------------------------------------------------------------------------------------------
# the cycle


class Results:
    def __init__(self):
        self.passed = self.failed = 0

    def check(self, name, fn):
        started = time.monotonic()
        try:
            value = fn()
        except Exception:  # noqa: BLE001 - every failure is reported, the run goes on
            self.failed += 1
            print(f"FAIL {name} ({time.monotonic() - started:.1f}s)", flush=True)
            print("  " + traceback.format_exc().strip().replace("\n", "\n  "), flush=True)
            return False, None
        self.passed += 1
        print(f"ok   {name} ({time.monotonic() - started:.1f}s)", flush=True)
        return True, value

    def skip(self, name, why):
        self.failed += 1
        print(f"FAIL {name} (not run: {why})", flush=True)


def list_json(stdout):
    lines = [line for line in stdout.splitlines() if line.startswith("[")]
    assert len(lines) == 1, f"expected one JSON data line on stdout, got: {stdout!r}"
    return json.loads(lines[0])


def declared_store_values(store, key):
    """The store's values moved from backup.stackGraph to backup.stores.<key> (with the shared
    StackGraph settings of common.yaml): the same store declared only in values. StackGraph is off.
    Returns (values file, the same with old-backup.yaml layered)."""
    def merged(*files):
        out = {}
        for f in files:
            deep_merge(out, yaml.safe_load((VALUES / f).read_text())["backup"]["stackGraph"])
        return out

    files = []
    for extra in ([], ["old-backup.yaml"]):
        sg = merged("common.yaml", store.values, *extra)
        sg["bucketName"] = f"sts-e2e-store-{key}"  # not the StackGraph run's bucket
        doc = {"backup": {"stackGraph": {"scheduled": {"enabled": False}, "restore": {"enabled": False}},
                          "stores": {key: sg}}}
        path = WORK / f"store-{key}{'-old' if extra else ''}.yaml"
        path.write_text(yaml.safe_dump(doc))
        files.append(path)
    return files


def deep_merge(into, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            deep_merge(into[k], v)
        else:
            into[k] = v
    return into


def cycle(results, mode, store, key="stackgraph"):
    """backup -> backup (old) -> list -> prune -> list -> restore -> refused restore [-> forced].
    `key` is the store: "stackgraph" runs the store as backup.stackGraph, another name runs it
    declared as backup.stores.<key> (same pods, from the same chart helpers)."""
    tag = f"{mode.name}/{store.name}" + ("" if key == "stackgraph" else f"/stores.{key}")
    store.reset()
    pvc_root = WORK / "pvc" / tag.replace("/", "-")
    bucket = store.bucket if key == "stackgraph" else f"sts-e2e-store-{key}"
    if key == "stackgraph":
        common = ["common.yaml", store.values, mode.values]
        old = common + ["old-backup.yaml"]
        env_key = "backup.stackGraph.extraEnv"
    else:
        declared, declared_old = declared_store_values(store, key)
        common = ["common.yaml", declared, mode.values]
        old = ["common.yaml", declared_old, mode.values]
        env_key = f"backup.stores.{key}.extraEnv"
    sets = {**mode.sets(), env_key: store.pod_env()}
    r = render(common, sets)
    r_old = render(old, sets)
    port = chart.free_port()
    storage, _ = chart.start_storage(r, mode.storage_dir(), port, WORK)
    track(storage)
    images = [
        (r"sts-backup/jobs:.+", Image(SYSTEM_PATH, {"/usr/local/bin": JOBS_BIN})),
        # the rclone image: rclone, and a /bin/sh with the usual tools (busybox in the real image)
        (r"docker\.io/rclone/rclone:.+", Image(f"{Path(shutil.which('rclone')).parent}:{SYSTEM_PATH}",
                                               {"/bin": Path("/bin")})),
        (store.image, Image(store.tool_path())),
    ]
    pods_dir = WORK / "pods" / tag.replace("/", "-")
    node = Node(r, port, pvc_root, images, pods_dir)
    node_old = Node(r_old, port, pvc_root, images, pods_dir)
    state = {}

    def backups_in_backend():
        """(data objects, all objects) below the store's prefix, keys without the prefix."""
        found = mode.objects(bucket) or {}
        outside = [k for k in found if not k.startswith(store.prefix)]
        assert not outside, f"objects outside the prefix {store.prefix!r}: {outside}"
        objs = {k[len(store.prefix):]: v for k, v in found.items()}
        return {k: v for k, v in objs.items() if not k.endswith(".manifest.json")}, objs

    def step_backup():
        def inspect(pod):
            pod.expect(0)
            init, main = pod.containers
            assert init.name == "copy-binary" and main.name == "backup", [c.name for c in pod.containers]
            copied = pod.mounts[("copy-binary", "/sts-backup/bin")] / "stackgraph-backup"
            assert copied.is_file() and filecmp.cmp(copied, JOBS_BIN / "stackgraph-backup", shallow=False)
            assert main.argv[0] == str(copied), main.argv  # the main container runs the copied binary
            scratch = pod.mounts.get(("backup", "/scratch"))
            assert (scratch is not None) == store.uses_file, "a scratch volume only for {file} commands"
            if scratch is not None:  # the scratch file is gone after the upload
                assert not list(scratch.iterdir()), list(scratch.iterdir())

        node.run_pod(pod_template(r.one("CronJob", f"{key}-backup")), "backup", inspect)
        data, objs = backups_in_backend()
        assert len(data) == 1, f"backend holds {sorted(objs)}"
        name = next(iter(data))
        assert re.fullmatch(r"sts-backup-\d{8}-\d{4}\.graph", name), name
        assert f"{name}.manifest.json" in objs, sorted(objs)
        manifest = json.loads(objs[f"{name}.manifest.json"])
        assert manifest["sha256"] == sha256_bytes(data[name]) and manifest["size"] == len(data[name]), manifest
        assert manifest["compression"] == store.compression, manifest
        if store.compression == "zstd":
            assert data[name][:4] == b"\x28\xb5\x2f\xfd", "not a zstd frame"
            assert manifest["raw_size"] > manifest["size"], manifest
        state["current"] = name
        state["v1"] = store.digest("source")

    def step_old_backup():
        time.sleep(1.1)  # a later `created` second than the first backup: list order is by creation
        store.mutate_source()
        state["v2"] = store.digest("source")
        assert state["v2"] != state["v1"]
        node_old.run_pod(pod_template(r_old.one("CronJob", f"{key}-backup")), "backup-old").expect(0)
        data, objs = backups_in_backend()
        assert sorted(data) == sorted([OLD_BACKUP, state["current"]]), sorted(objs)

    def step_list():
        job = filled_job(r, f"job-{key}-list.json", JOB_NAME=f"{key}-list-backups-e2e",
                         OUTPUT_FORMAT="json")
        pod = node.run_pod(pod_template(job), "list").expect(0)
        assert pod.main.name == "list"
        listed = list_json(pod.main.stdout)
        data, _ = backups_in_backend()
        # oldest first by creation time: the 2020-named backup was made last
        assert [b["name"] for b in listed] == [state["current"], OLD_BACKUP], listed
        assert listed[0]["created"] <= listed[1]["created"], listed
        for b in listed:
            assert b["size"] == len(data[b["name"]]) and b["sha256"] == sha256_bytes(data[b["name"]]), b
            assert b["compression"] == store.compression, b

    def step_prune():
        pod = node.run_pod(pod_template(r.one("CronJob", f"{key}-retention")), "retention").expect(0)
        assert f'Purging backup "{OLD_BACKUP}"' in pod.main.stdout, pod.main.stdout
        assert f'Not purging backup "{state["current"]}"' in pod.main.stdout, pod.main.stdout
        data, objs = backups_in_backend()
        assert sorted(objs) == sorted([state["current"], state["current"] + ".manifest.json"]), sorted(objs)
        job = filled_job(r, f"job-{key}-list.json", JOB_NAME=f"{key}-list-backups-e2e2",
                         OUTPUT_FORMAT="json")
        listed = list_json(node.run_pod(pod_template(job), "list-after-prune").expect(0).main.stdout)
        assert [b["name"] for b in listed] == [state["current"]], listed

    def restore(force, name):
        job = filled_job(r, f"job-{key}-restore.json", JOB_NAME=f"{key}-restore-{name}",
                         BACKUP_NAME=state["current"], LATEST="false", FORCE="true" if force else "false")
        return node.run_pod(pod_template(job), name)

    def step_restore():
        pod = restore(False, "restore").expect(0)
        assert [c.name for c in pod.containers] == ["copy-binary", "restore"]
        restored = store.digest("target", pvc_root)
        assert restored == state["v1"], f"restored {restored}, backed up {state['v1']}"
        assert restored != state["v2"]

    def step_refused():
        before = store.target_state(pvc_root)
        pod = restore(False, "restore-refused").expect(3)
        assert "--force" in pod.main.stderr, pod.main.stderr
        assert store.target_state(pvc_root) == before, "the refused restore changed the target"

    def step_forced():
        store.tamper_target()
        assert store.digest("target") != state["v1"]
        restore(True, "restore-forced").expect(0)
        assert store.digest("target") == state["v1"]

    def step_helm_test():
        dep = r.one("Deployment", "minio")
        assert dep["metadata"]["labels"]["sts-backup.io/storage-engine"] == "rclone", "the default engine"
        pod = node.run_pod(pod_template(r.one("Pod", "test")), "helm-test").expect(0)
        targets = r.one("Pod", "test")["spec"]["containers"][0]["env"][1]["value"].split()
        for target in targets:
            assert f"helm test: {target}: list, put, get, delete ok" in pod.main.stdout, pod.main.stdout

    steps = [("helm test pod against the default engine (rclone serve s3)", step_helm_test),
             ("backup (CronJob pod: copy-binary init + export, bucket created)", step_backup),
             ("second backup, dated 2020 (CronJob pod of a render without retention)", step_old_backup),
             ("list (Job from the ConfigMap, -o json)", step_list),
             ("prune (retention CronJob pod: days = 30, keeps the newest)", step_prune),
             ("restore into an empty target (Job from the ConfigMap)", step_restore),
             ("restore into the non-empty target without force is refused: exit 3, data untouched",
              step_refused)]
    if store.supports_force:
        steps.append(("forced restore over a tampered target", step_forced))
    try:
        run_steps(results, tag, steps, f"storage log: {WORK}/rclone-{port}.log; pods: {pods_dir}")
    finally:
        stop(storage)


# ------------------------------------------------------------------------------------------
# the configuration store (StackState 5.1 backup.configuration) with a stand-in `sts` CLI

STS_TOKEN = "e2e-api-token-0123456789"
# The stand-in `sts` CLI: the "server" is a settings file (JSON); it behaves like the reference
# where the chart relies on it. It answers 401 without the API token from the Secret, `settings
# describe --file F` writes the settings (or, when the server is "broken", an error text without
# "_version": and exit 0, the failure the reference's shape check caught), `settings apply --file F`
# refuses a file without "_version": and replaces the settings, `stackpack list --installed -o json`
# lists the installed StackPacks (what the chart's emptiness check asks).
STS_STANDIN = r"""#!/usr/bin/python3
import json, os, sys
SETTINGS, BROKEN = {settings!r}, {broken!r}
if os.environ.get("STS_API_TOKEN") != {token!r}:
    sys.exit("sts: 401 Unauthorized (no or wrong STS_API_TOKEN)")
if not os.environ.get("STS_URL", "").startswith("http"):
    sys.exit("sts: no STS_URL")
args = sys.argv[1:]
if args[:2] == ["settings", "describe"] and args[2] == "--file":
    text = "Error: the router answered 503" if os.path.exists(BROKEN) else open(SETTINGS).read()
    open(args[3], "w").write(text)
elif args[:2] == ["settings", "apply"] and args[2] == "--file":
    text = open(args[3]).read()
    if '"_version":' not in text:
        sys.exit("sts: not a settings export")
    open(SETTINGS, "w").write(text)
elif args == ["stackpack", "list", "--installed", "-o", "json"]:
    nodes = json.load(open(SETTINGS)).get("nodes", [])
    print(json.dumps([{{"name": n["name"]}} for n in nodes if n.get("_type") == "StackPack"]))
else:
    sys.exit("sts: unknown command " + " ".join(args))
"""


def settings(version, stackpacks, monitors):
    nodes = [{"_type": "StackPack", "name": s} for s in stackpacks]
    nodes += [{"_type": "Monitor", "name": m, "id": i} for i, m in enumerate(monitors)]
    return json.dumps({"_version": version, "nodes": nodes}, indent=1)


def configuration_cycle(results, mode):
    """Configuration backups as StackState 5.1 configured them: backup -> the shape check ->
    list -> refused restore (exit 3) -> forced restore, and a restore into an empty configuration."""
    tag = f"{mode.name}/configuration"
    home = WORK / "configuration"
    home.mkdir(mode=0o777)
    home.chmod(0o777)
    settings_file, broken = home / "settings.json", home / "broken"
    tool_dir = home / "bin"
    tool_dir.mkdir()
    (tool_dir / "sts").write_text(STS_STANDIN.format(settings=str(settings_file), broken=str(broken),
                                                      token=STS_TOKEN))
    (tool_dir / "sts").chmod(0o755)
    v1 = settings("5.1.0", ["kubernetes", "aws"], ["cpu", "memory"])
    v2 = settings("5.1.0", ["kubernetes"], ["cpu", "memory", "changed after the backup"])
    settings_file.write_text(v1)
    settings_file.chmod(0o666)
    # the StackState 5.1 values of backup.configuration, with seconds in the name so two runs in
    # one minute get two names
    sets = {**mode.sets(),
            "backup.configuration.restore.enabled": True, "backup.configuration.scheduled.enabled": True,
            "backup.configuration.orchestrate.enabled": False,
            "backup.stackGraph.scheduled.enabled": False, "backup.stackGraph.restore.enabled": False,
            "backup.configuration.scheduled.backupNameTemplate": "sts-backup-$(date +%Y%m%d-%H%M%S).stj",
            "backup.configuration.scheduled.backupNameParseRegexp": "sts-backup-([0-9]*-[0-9]*).stj",
            "backup.configuration.scheduled.backupDatetimeParseFormat": "%Y%m%d-%H%M%S"}
    r = render(["common.yaml", mode.values], sets)
    # the API token Secret the operator creates (backup.configuration.apiToken.existingSecret)
    r.docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sts-backup-configuration-api"},
                   "data": {"token": base64.b64encode(STS_TOKEN.encode()).decode()}})
    port = chart.free_port()
    storage, _ = chart.start_storage(r, mode.storage_dir(), port, WORK)
    track(storage)
    images = [(r"sts-backup/jobs:.+", Image(SYSTEM_PATH, {"/usr/local/bin": JOBS_BIN})),
              (r"quay\.io/stackstate/container-tools:1\.1\.4", Image(f"{tool_dir}:{SYSTEM_PATH}"))]
    pods_dir = WORK / "pods" / tag.replace("/", "-")
    node = Node(r, port, WORK / "pvc" / "configuration", images, pods_dir)
    state = {}

    def backups():
        found = mode.objects("sts-configuration-backup") or {}
        return {k: v for k, v in found.items() if not k.endswith(".manifest.json")}, found

    def step_backup():
        pod = node.run_pod(pod_template(r.one("CronJob", "configuration-backup")), "backup").expect(0)
        assert STS_TOKEN not in " ".join(pod.main.argv) and STS_TOKEN not in pod.main.stderr + pod.main.stdout
        data, objs = backups()
        assert len(data) == 1, sorted(objs)
        name = next(iter(data))
        assert re.fullmatch(r"sts-backup-\d{8}-\d{6}\.stj", name), name
        assert data[name] == v1.encode() and f"{name}.manifest.json" in objs
        state["name"] = name

    def step_shape_check():
        time.sleep(1.1)  # another second: another name
        broken.write_text("")
        try:
            pod = node.run_pod(pod_template(r.one("CronJob", "configuration-backup")), "backup-broken").expect(1)
        finally:
            broken.unlink()
        assert 'does not contain "\\"_version\\":"' in pod.main.stderr, pod.main.stderr
        _, objs = backups()
        assert sorted(objs) == sorted([state["name"], state["name"] + ".manifest.json"]), sorted(objs)

    def step_list():
        job = filled_job(r, "job-configuration-list.json", JOB_NAME="configuration-list-backups-e2e",
                         OUTPUT_FORMAT="json")
        listed = list_json(node.run_pod(pod_template(job), "list").expect(0).main.stdout)
        assert [b["name"] for b in listed] == [state["name"]], listed

    def restore(force, name):
        job = filled_job(r, "job-configuration-restore.json", JOB_NAME=f"configuration-restore-{name}",
                         BACKUP_NAME=state["name"], LATEST="false", FORCE="true" if force else "false")
        return node.run_pod(pod_template(job), name)

    def step_refused():
        settings_file.write_text(v2)  # a StackPack is installed: not empty
        pod = restore(False, "restore-refused").expect(3)
        assert "--force" in pod.main.stderr, pod.main.stderr
        assert settings_file.read_text() == v2, "the refused restore changed the configuration"

    def step_forced():
        restore(True, "restore-forced").expect(0)
        assert settings_file.read_text() == v1

    def step_empty():
        settings_file.write_text(settings("5.1.0", [], []))  # a fresh installation: no StackPack
        restore(False, "restore-empty").expect(0)
        assert settings_file.read_text() == v1

    steps = [("backup (CronJob pod: sts settings describe, token from the Secret, bucket created)", step_backup),
             ('an export without "_version": is refused, nothing committed (exit 1)', step_shape_check),
             ("list (job-configuration-list.json)", step_list),
             ("restore into a configuration with a StackPack installed is refused: exit 3, untouched",
              step_refused),
             ("forced restore (sts settings apply) brings the backed-up settings back", step_forced),
             ("restore into an empty configuration needs no force", step_empty)]
    try:
        run_steps(results, tag, steps, f"storage log: {WORK}/rclone-{port}.log; pods: {pods_dir}")
    finally:
        stop(storage)


def run_steps(results, tag, steps, where):
    """Runs (title, fn) steps in order; after a failure the rest are reported as not run."""
    failed = None
    for title, fn in steps:
        if failed:
            results.skip(f"{tag}: {title}", f"{failed} failed")
            continue
        ok, _ = results.check(f"{tag}: {title}", fn)
        if not ok:
            failed = title.split(" (")[0]
            print(f"  {where}", flush=True)


def on_signal(signum, _frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the cleanup short
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop the servers


def main():
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    words = sys.argv[1:]
    selected = [m for m in MODES if not words or m.name in words or not any(x.name in words for x in MODES)]
    stores = [s for s in STORES if not words or s.name in words or not any(x.name in words for x in STORES)]
    results = Results()
    started = time.monotonic()
    for exe in ("stackgraph-backup", "retention-pruner"):
        assert (JOBS_BIN / exe).is_file(), f"{JOBS_BIN / exe} missing: run cargo build first"
    instances = []
    interrupted = None
    try:
        ok, running = results.check("start the stores: " + ", ".join(s.name for s in stores),
                                    lambda: [s() for s in stores])
        if ok:
            instances = running
            for mode_cls in selected:
                ok, mode = results.check(f"{mode_cls.name}: start the storage backend", mode_cls)
                if not ok:
                    continue
                try:
                    for store in instances:
                        cycle(results, mode, store)
                    if mode.name == "local":  # the stores declared in values, and the configuration
                        for store in instances:
                            cycle(results, mode, store, key=store.store_key)
                        results.check(f"{mode.name}/configuration: the cycle ran to its end",
                                      lambda: configuration_cycle(results, mode))
                finally:
                    mode.close()
    except SystemExit as e:  # SIGTERM/SIGINT: stop everything, report, and drop the work dir
        interrupted = e.code
        results.skip("the run", f"interrupted (exit {e.code})")
    finally:
        for s in instances:
            s.close()
        stop_all()
    keep = (results.failed and not interrupted) or os.environ.get("E2E_KEEP") == "1"
    print(f"e2e: runtime {time.monotonic() - started:.0f}s, work dir {WORK}" + (" (kept)" if keep else ""))
    if not keep:
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"e2e: {results.passed} passed, {results.failed} failed")
    return interrupted or (1 if results.failed else 0)


if __name__ == "__main__":
    sys.exit(main())
