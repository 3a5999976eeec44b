"""A kubelet for the API double: binds every pod to one node and runs it in real containers with
podman + runc, on the host network (Services resolve to 127.0.0.1 through /etc/hosts entries).

What it honours of the pod spec: init containers in order then the containers together; command,
args, workingDir, env (value, secretKeyRef, configMapKeyRef, fieldRef), envFrom; volumes emptyDir,
secret, configMap, persistentVolumeClaim (a directory per claim) and the projected ServiceAccount
token volume (a real token from the double's TokenRequest, ca.crt, namespace); securityContext
runAsUser/runAsGroup/fsGroup/supplementalGroups, runAsNonRoot (checked against the image's user as
the real kubelet does), readOnlyRootFilesystem, capabilities, allowPrivilegeEscalation, privileged;
restartPolicy; graceful deletion (SIGTERM, then SIGKILL after the grace period); exit codes into
container states and the pod phase; logs per container, served by `kubectl logs [-f]`.
Not modelled: resource limits, probes, image pulls (images must be built locally; `--pull never`)."""

import base64
import json
import os
import shutil
import subprocess
import threading
import time

import resources
from api import now

PODS = resources.BY_KEY[("", "pods")]
SECRETS = resources.BY_KEY[("", "secrets")]
CONFIGMAPS = resources.BY_KEY[("", "configmaps")]
SERVICES = resources.BY_KEY[("", "services")]
NODE = "sts-node-1"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class PodFailed(Exception):
    def __init__(self, reason, message):
        super().__init__(message)
        self.reason, self.message = reason, message


def podman_env(state_dir):
    """Environment for podman: runc, cgroupfs and no ulimit changes (what this sandbox allows)."""
    conf = os.path.join(state_dir, "containers.conf")
    if not os.path.exists(conf):
        with open(conf, "w", encoding="utf-8") as f:
            f.write('[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n'
                    'cgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    return dict(os.environ, CONTAINERS_CONF=conf)


class Kubelet:
    def __init__(self, api, server, state_dir, api_url):
        self.api, self.server = api, server
        self.dir = os.path.join(state_dir, "kubelet")
        os.makedirs(self.dir, exist_ok=True)
        self.env = podman_env(self.dir)
        self.api_port = api_url.rsplit(":", 1)[1]
        self.label = f"sts-kubelet={os.path.basename(state_dir.rstrip('/'))}"
        self.workers = {}
        self.running = {}  # (ns, pod, container) -> Popen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        server.logs = self.log_path
        server.container_running = lambda ns, pod, c: (ns, pod, c) in self.running
        api.kubelet_active = True

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        for _ in range(2):  # a worker may have been starting a container while the first pass ran
            for p in list(self.running.values()):
                p.terminate()
            subprocess.run(["podman", "rm", "-f", "-t", "1", "--filter", f"label={self.label}"], env=self.env,
                           capture_output=True, check=False)
            time.sleep(0.5)

    def _loop(self):
        while not self._stop.wait(0.2):
            for pod in self.api.store.items(PODS.key, None):
                meta = pod["metadata"]
                key = meta["uid"]
                worker = self.workers.get(key)
                if meta.get("deletionTimestamp") and (worker is None or not worker.is_alive()):
                    self.api.finish_pod_deletion(meta["namespace"], meta["name"])
                    continue
                if worker is not None or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                self._bind(pod)
                t = threading.Thread(target=self._run_pod, args=(meta["namespace"], meta["name"], key), daemon=True)
                self.workers[key] = t
                t.start()

    def _bind(self, pod):
        with self.api.store.lock:
            cur = self.api.store.get(PODS.key, pod["metadata"]["namespace"], pod["metadata"]["name"])
            if cur is None or cur["spec"].get("nodeName"):
                return
            cur["spec"]["nodeName"] = NODE
            cur["status"]["conditions"] = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]
            self.api.put(PODS, cur)

    # ---- status --------------------------------------------------------------------------------

    def _pod(self, ns, name, uid):
        pod = self.api.store.get(PODS.key, ns, name)
        return pod if pod is not None and pod["metadata"]["uid"] == uid else None

    def _set_status(self, ns, name, uid, fn):
        with self.api.store.lock:
            pod = self._pod(ns, name, uid)
            if pod is None:
                return None
            fn(pod["status"])
            return self.api.put(PODS, pod)

    def log_path(self, ns, pod, container):
        obj = self.api.store.peek(PODS.key, ns, pod)
        if obj is None:
            return None
        return os.path.join(self.dir, "logs", f"{ns}_{pod}_{obj['metadata']['uid']}", f"{container}.log")

    # ---- running a pod -------------------------------------------------------------------------

    def _run_pod(self, ns, name, uid):
        pod = self._pod(ns, name, uid)
        if pod is None:
            return
        spec = pod["spec"]
        base = os.path.join(self.dir, "pods", uid)
        os.makedirs(os.path.join(self.dir, "logs", f"{ns}_{name}_{uid}"), exist_ok=True)
        init = spec.get("initContainers") or []
        containers = spec.get("containers") or []

        def waiting(st, reason="PodInitializing" if init else "ContainerCreating", message=None):
            st["phase"] = "Pending"
            st["hostIP"] = st["podIP"] = "127.0.0.1"
            st["podIPs"] = [{"ip": "127.0.0.1"}]
            st["startTime"] = st.get("startTime") or now()
            w = {"reason": reason, **({"message": message} if message else {})}
            st["initContainerStatuses"] = [self._cstatus(c, {"waiting": w}) for c in init] if init else None
            st["containerStatuses"] = [self._cstatus(c, {"waiting": w}) for c in containers]
            if not init:
                st.pop("initContainerStatuses", None)
        self._set_status(ns, name, uid, waiting)
        try:
            volumes = self._volumes(pod, base)
            for c in init + containers:
                # what the kubelet checks before creating any container of the pod
                self._security(pod, c, c.get("image", ""))
                self._env(pod, c)
            for i, c in enumerate(init):
                code = self._run_container(pod, c, volumes, init=True, index=i)
                if code is None:
                    return self._terminated(ns, name, uid)
                if code != 0:
                    if spec.get("restartPolicy") == "Never":
                        return self._finish(ns, name, uid, "Failed")
                    # OnFailure/Always: retry the init container (counted as a restart)
                    time.sleep(1)
                    return self._run_pod_again(ns, name, uid)
            self._run_main(pod, containers, volumes)
        except PodFailed as e:
            self._set_status(ns, name, uid, lambda st: waiting(st, e.reason, e.message))
        except Exception as e:  # noqa: BLE001  a kubelet bug shows on the pod, not as a hang
            import traceback
            traceback.print_exc()
            self._set_status(ns, name, uid, lambda st: waiting(st, "KubeletError", repr(e)))

    def _run_pod_again(self, ns, name, uid):
        self.workers.pop(uid, None)

    def _cstatus(self, c, state, restarts=0, image_id=""):
        return {"name": c["name"], "image": c.get("image", ""), "imageID": image_id, "ready": "running" in state,
                "restartCount": restarts, "started": "running" in state, "state": state,
                **({"containerID": state.pop("_id")} if "_id" in state else {})}

    def _run_main(self, pod, containers, volumes):
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        policy = pod["spec"].get("restartPolicy", "Always")
        restarts = {c["name"]: 0 for c in containers}
        results = {}
        lock = threading.Lock()

        def one(c):
            while True:
                code = self._run_container(pod, c, volumes, restarts=restarts[c["name"]])
                with lock:
                    results[c["name"]] = code
                if code is None:
                    return
                if policy == "Never" or (policy == "OnFailure" and code == 0):
                    return
                if self._pod(ns, name, uid) is None or self._deleting(ns, name, uid):
                    return
                restarts[c["name"]] += 1
                delay = min(10 * 2 ** (restarts[c["name"]] - 1), 300) if code else 1
                self._set_status(ns, name, uid, lambda st: self._container_state(
                    st, c, {"waiting": {"reason": "CrashLoopBackOff" if code else "Completed"}},
                    restarts[c["name"]]))
                time.sleep(min(delay, 2))

        threads = [threading.Thread(target=one, args=(c,), daemon=True) for c in containers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(v is None for v in results.values()):
            return self._terminated(ns, name, uid)
        phase = "Succeeded" if all(v == 0 for v in results.values()) else "Failed"
        self._finish(ns, name, uid, phase)

    def _deleting(self, ns, name, uid):
        pod = self._pod(ns, name, uid)
        return pod is None or bool(pod["metadata"].get("deletionTimestamp"))

    def _finish(self, ns, name, uid, phase):
        def fn(st):
            st["phase"] = phase
            st["conditions"] = [c for c in st.get("conditions", []) if c["type"] == "PodScheduled"] + [
                {"type": t, "status": "False", "reason": "PodCompleted", "lastTransitionTime": now()}
                for t in ("Initialized", "Ready", "ContainersReady")]
        self._set_status(ns, name, uid, fn)
        self._terminated(ns, name, uid)

    def _terminated(self, ns, name, uid):
        pod = self._pod(ns, name, uid)
        if pod is not None and pod["metadata"].get("deletionTimestamp"):
            self.api.finish_pod_deletion(ns, name)

    def _container_state(self, st, c, state, restarts=0, init=False):
        key = "initContainerStatuses" if init else "containerStatuses"
        statuses = st.setdefault(key, [])
        new = self._cstatus(c, state, restarts)
        for i, s in enumerate(statuses):
            if s["name"] == c["name"]:
                statuses[i] = new
                break
        else:
            statuses.append(new)
        if not init:
            ready = all(s.get("ready") for s in st.get("containerStatuses", []))
            running = any("running" in s["state"] for s in st.get("containerStatuses", []))
            if running:
                st["phase"] = "Running"
            conds = [c for c in st.get("conditions", []) if c["type"] == "PodScheduled"]
            conds += [{"type": "Initialized", "status": "True", "lastTransitionTime": now()},
                      {"type": "ContainersReady", "status": "True" if ready else "False",
                       "lastTransitionTime": now()},
                      {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": now()}]
            st["conditions"] = conds

    # ---- one container -------------------------------------------------------------------------

    def _image_user(self, image):
        p = subprocess.run(["podman", "image", "inspect", "--format", "{{.Config.User}}", image], env=self.env,
                           capture_output=True, text=True, check=False)
        if p.returncode != 0:
            raise PodFailed("ErrImageNeverPull", f'Container image "{image}" is not present with pull policy of '
                                                 "Never")
        return p.stdout.strip()

    def _security(self, pod, c, image):
        psc = pod["spec"].get("securityContext") or {}
        sc = c.get("securityContext") or {}
        args = []
        uid = sc.get("runAsUser", psc.get("runAsUser"))
        gid = sc.get("runAsGroup", psc.get("runAsGroup"))
        image_user = self._image_user(image)
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")):
            if uid is not None:
                if uid == 0:
                    raise PodFailed("CreateContainerConfigError", "container's runAsUser breaks non-root policy "
                                    f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}'
                                    f'({pod["metadata"]["uid"]})", container: {c["name"]})')
            else:
                user = image_user.split(":")[0]
                if user in ("", "0", "root"):
                    raise PodFailed("CreateContainerConfigError", "container has runAsNonRoot and image will run "
                                                                  "as root "
                                    f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}'
                                    f'({pod["metadata"]["uid"]})", container: {c["name"]})')
                if not user.isdigit():
                    raise PodFailed("CreateContainerConfigError", "container has runAsNonRoot and image has "
                                    f"non-numeric user ({user}), cannot verify user is non-root "
                                    f'(pod: "{pod["metadata"]["name"]}_{pod["metadata"]["namespace"]}'
                                    f'({pod["metadata"]["uid"]})", container: {c["name"]})')
        if uid is not None or gid is not None:
            u = str(uid) if uid is not None else (image_user.split(":")[0] or "0")
            args += ["--user", f"{u}:{gid if gid is not None else 0}"]
        for g in ([psc["fsGroup"]] if psc.get("fsGroup") is not None else []) + (psc.get("supplementalGroups") or []):
            args += ["--group-add", str(g)]
        if sc.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        if sc.get("privileged"):
            args.append("--privileged")
        caps = sc.get("capabilities") or {}
        for cap in caps.get("drop") or []:
            args += ["--cap-drop", cap.upper() if cap.upper() == "ALL" else f"CAP_{cap.upper()}".replace("CAP_CAP_", "CAP_")]
        for cap in caps.get("add") or []:
            args += ["--cap-add", f"CAP_{cap.upper()}".replace("CAP_CAP_", "CAP_")]
        if sc.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        return args

    def _env(self, pod, c):
        ns = pod["metadata"]["namespace"]
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": self.api_port,
               "KUBERNETES_SERVICE_PORT_HTTPS": self.api_port, "KUBERNETES_PORT": f"tcp://127.0.0.1:{self.api_port}",
               "HOSTNAME": pod["spec"].get("hostname") or pod["metadata"]["name"]}
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "configMapRef" in src:
                data = self._lookup(CONFIGMAPS, ns, src["configMapRef"]["name"], src["configMapRef"].get("optional"))
                env.update({prefix + k: v for k, v in ((data or {}).get("data") or {}).items()})
            if "secretRef" in src:
                data = self._lookup(SECRETS, ns, src["secretRef"]["name"], src["secretRef"].get("optional"))
                env.update({prefix + k: base64.b64decode(v).decode() for k, v in ((data or {}).get("data") or {}).items()})
        for e in c.get("env") or []:
            if "valueFrom" not in e:
                env[e["name"]] = self._expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "secretKeyRef" in vf:
                ref = vf["secretKeyRef"]
                obj = self._lookup(SECRETS, ns, ref["name"], ref.get("optional"))
                raw = ((obj or {}).get("data") or {}).get(ref["key"])
                if raw is None and obj is not None and not ref.get("optional"):
                    raise PodFailed("CreateContainerConfigError", f"couldn't find key {ref['key']} in Secret "
                                                                  f"{ns}/{ref['name']}")
                if raw is not None:
                    env[e["name"]] = base64.b64decode(raw).decode()
            elif "configMapKeyRef" in vf:
                ref = vf["configMapKeyRef"]
                obj = self._lookup(CONFIGMAPS, ns, ref["name"], ref.get("optional"))
                val = ((obj or {}).get("data") or {}).get(ref["key"])
                if val is None and obj is not None and not ref.get("optional"):
                    raise PodFailed("CreateContainerConfigError", f"couldn't find key {ref['key']} in ConfigMap "
                                                                  f"{ns}/{ref['name']}")
                if val is not None:
                    env[e["name"]] = val
            elif "fieldRef" in vf:
                path = vf["fieldRef"]["fieldPath"]
                meta = pod["metadata"]
                values = {"metadata.name": meta["name"], "metadata.namespace": ns, "metadata.uid": meta["uid"],
                          "spec.nodeName": NODE, "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
                          "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
                if path.startswith("metadata.labels['"):
                    env[e["name"]] = (meta.get("labels") or {}).get(path[17:-2], "")
                elif path.startswith("metadata.annotations['"):
                    env[e["name"]] = (meta.get("annotations") or {}).get(path[22:-2], "")
                else:
                    env[e["name"]] = values.get(path, "")
        return env

    @staticmethod
    def _expand(value, env):
        """$(VAR) references to earlier variables, as the kubelet expands them."""
        out, i = "", 0
        while i < len(value):
            if value.startswith("$$", i):
                out, i = out + "$", i + 2
            elif value.startswith("$(", i) and ")" in value[i:]:
                end = value.index(")", i)
                name = value[i + 2:end]
                out += env.get(name, value[i:end + 1])
                i = end + 1
            else:
                out, i = out + value[i], i + 1
        return out

    def _lookup(self, res, ns, name, optional):
        obj = self.api.store.get(res.key, ns, name)
        if obj is None and not optional:
            kind = "secret" if res.plural == "secrets" else "configmap"
            raise PodFailed("CreateContainerConfigError", f'{kind} "{name}" not found')
        return obj

    def _volumes(self, pod, base):
        """Materialises each volume as a host directory; returns {name: (path, read_only)}."""
        ns = pod["metadata"]["namespace"]
        fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
        out = {}
        for v in pod["spec"].get("volumes") or []:
            path = os.path.join(base, "volumes", v["name"])
            if "emptyDir" in v:
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o777)
                out[v["name"]] = (path, False)
            elif "persistentVolumeClaim" in v:
                claim = v["persistentVolumeClaim"]["claimName"]
                if self.api.store.peek(("", "persistentvolumeclaims"), ns, claim) is None:
                    raise PodFailed("Unschedulable", f'persistentvolumeclaim "{claim}" not found')
                path = os.path.join(self.dir, "pvcs", ns, claim)
                os.makedirs(path, exist_ok=True)
                os.chmod(path, 0o777)
                out[v["name"]] = (path, bool(v["persistentVolumeClaim"].get("readOnly")))
            elif "secret" in v or "configMap" in v:
                is_secret = "secret" in v
                src = v["secret"] if is_secret else v["configMap"]
                ref = src.get("secretName") if is_secret else src.get("name")
                obj = self._lookup(SECRETS if is_secret else CONFIGMAPS, ns, ref, src.get("optional"))
                data = (obj or {}).get("data") or {}
                files = {k: (base64.b64decode(val) if is_secret else val.encode()) for k, val in data.items()}
                self._write_files(path, files, src.get("items"), src.get("defaultMode", 0o644), fs_group)
                out[v["name"]] = (path, True)
            elif "projected" in v:
                files = {}
                for s in v["projected"].get("sources") or []:
                    if "serviceAccountToken" in s:
                        tok = self.api.create_token(ns, pod["spec"].get("serviceAccountName", "default"),
                                                    {"spec": {"expirationSeconds":
                                                              s["serviceAccountToken"].get("expirationSeconds", 3600)}})
                        files[s["serviceAccountToken"]["path"]] = tok["status"]["token"].encode()
                    elif "configMap" in s:
                        obj = self._lookup(CONFIGMAPS, ns, s["configMap"]["name"], s["configMap"].get("optional"))
                        for item in s["configMap"].get("items") or [{"key": k, "path": k} for k in
                                                                     ((obj or {}).get("data") or {})]:
                            files[item["path"]] = ((obj or {}).get("data") or {}).get(item["key"], "").encode()
                    elif "secret" in s:
                        obj = self._lookup(SECRETS, ns, s["secret"]["name"], s["secret"].get("optional"))
                        for k, val in ((obj or {}).get("data") or {}).items():
                            files[k] = base64.b64decode(val)
                    elif "downwardAPI" in s:
                        for item in s["downwardAPI"].get("items") or []:
                            if item.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                                files[item["path"]] = ns.encode()
                self._write_files(path, files, None, v["projected"].get("defaultMode", 0o644), fs_group)
                out[v["name"]] = (path, True)
            else:
                raise PodFailed("CreateContainerConfigError", f"volume {v['name']}: type not supported by the "
                                                              "kubelet double")
        return out

    @staticmethod
    def _write_files(path, files, items, mode, fs_group=None):
        """Writes a Secret/ConfigMap/projected volume. With an fsGroup the files belong to that group
        and gain group read, as the kubelet's volume ownership management does for these volumes."""
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
        os.chmod(path, 0o755)
        if fs_group is not None:
            os.chown(path, 0, fs_group)
        chosen = [(i["key"], i["path"], i.get("mode", mode)) for i in items] if items else \
            [(k, k, mode) for k in files]
        for key, rel, m in chosen:
            if key not in files:
                continue
            target = os.path.join(path, rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "wb") as f:
                f.write(files[key])
            if fs_group is not None:
                os.chown(target, 0, fs_group)
                m |= 0o040
            os.chmod(target, m)

    def _hosts(self):
        """Every Service name (short, namespaced, .svc, .svc.cluster.local) resolves to the host."""
        args = []
        for svc in self.api.store.items(SERVICES.key, None):
            n, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
            for host in (n, f"{n}.{ns}", f"{n}.{ns}.svc", f"{n}.{ns}.svc.cluster.local"):
                args += ["--add-host", f"{host}:127.0.0.1"]
        return args + ["--add-host", "kubernetes.default.svc:127.0.0.1", "--add-host", "kubernetes.default:127.0.0.1"]

    def _run_container(self, pod, c, volumes, init=False, index=0, restarts=0):
        """Runs one container to its end; returns its exit code, or None when the pod was deleted."""
        meta = pod["metadata"]
        ns, name, uid = meta["namespace"], meta["name"], meta["uid"]
        image = c.get("image", "")
        sec = self._security(pod, c, image)
        env = self._env(pod, c)
        cname = f"k8s_{c['name']}_{name}_{ns}_{uid[:8]}_{restarts}"
        args = ["podman", "run", "--name", cname, "--label", self.label, "--pull", "never", "--network", "host",
                "--hostname", env["HOSTNAME"], "--stop-timeout",
                str(int(pod["spec"].get("terminationGracePeriodSeconds", 30))), "--log-driver", "none"]
        args += self._hosts() + sec
        for k in env:
            args += ["--env", k]
        for m in c.get("volumeMounts") or []:
            if m["name"] not in volumes:
                raise PodFailed("CreateContainerConfigError", f"volume {m['name']} not found")
            host, ro = volumes[m["name"]]
            if m.get("subPath"):
                host = os.path.join(host, m["subPath"])
                os.makedirs(host, exist_ok=True)
            ro = ro or m.get("readOnly", False)
            args += ["-v", f"{host}:{m['mountPath']}:{'ro' if ro else 'rw'}"]
        if c.get("workingDir"):
            args += ["--workdir", c["workingDir"]]
        if c.get("command"):
            args += ["--entrypoint", json.dumps(c["command"])]
        args.append(image)
        args += c.get("args") or []
        log = self.log_path(ns, name, c["name"])
        if log is None:
            return None
        subprocess.run(["podman", "rm", "-f", cname], env=self.env, capture_output=True, check=False)
        if self._stop.is_set():
            return None  # the kubelet is shutting down: start nothing new
        started = now()
        with open(log, "ab") as out:
            proc = subprocess.Popen(args, stdout=out, stderr=out, stdin=subprocess.DEVNULL,
                                    env=dict(self.env, **env))
        self.running[(ns, name, c["name"])] = proc
        self._set_status(ns, name, uid, lambda st: self._container_state(
            st, c, {"running": {"startedAt": started}}, restarts, init))
        grace_deadline = None
        while proc.poll() is None:
            time.sleep(0.1)
            pod_now = self._pod(ns, name, uid)
            if pod_now is None or pod_now["metadata"].get("deletionTimestamp"):
                if grace_deadline is None:
                    grace = (pod_now or {}).get("metadata", {}).get("deletionGracePeriodSeconds", 0) or 0
                    grace_deadline = time.monotonic() + grace
                    subprocess.run(["podman", "kill", "--signal", "TERM", cname], env=self.env,
                                   capture_output=True, check=False)
                elif time.monotonic() > grace_deadline:
                    subprocess.run(["podman", "kill", "--signal", "KILL", cname], env=self.env,
                                   capture_output=True, check=False)
        code = proc.returncode
        self.running.pop((ns, name, c["name"]), None)
        subprocess.run(["podman", "rm", "-f", cname], env=self.env, capture_output=True, check=False)
        if grace_deadline is not None:
            return None
        reason = "Completed" if code == 0 else "Error"
        if code in (125, 126, 127):
            with open(log, "rb") as f:
                tail = f.read()[-400:].decode(errors="replace").strip()
            reason, msg = "StartError", tail
        else:
            msg = None
        term = {"exitCode": code, "reason": reason, "startedAt": started, "finishedAt": now()}
        if msg:
            term["message"] = msg
        self._set_status(ns, name, uid, lambda st: self._container_state(st, c, {"terminated": term}, restarts, init))
        return code

