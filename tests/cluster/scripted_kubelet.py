"""A scripted kubelet for the API double: binds every pod to the node and walks it through the
phases a test declared, with the log lines and exit code it declared, without running anything.
For tests of clients (the restore scripts with the real kubectl) that need a pod to be Pending,
Running, Succeeded or Failed with a given exit code and log, fast and without containers.

The script is DIR/kubelet-script.json, read when a pod first appears (a test may rewrite it
between runs): a list of rules, the first whose `pod` (a regular expression, searched in the pod
name) matches decides

    {"pod": "^stackgraph-restore-", "phases": ["Pending", "Running", "Failed"], "exit": 3,
     "logs": ["line", ...], "step": 0.05}

- `phases`: the pod's phases in order, `step` seconds apart (default 0.05). Entering Running,
  every container runs (state running) and the first container's log gets `logs`. Ending in
  Succeeded or Failed, the containers terminate: the first with `exit` (default 0 for Succeeded,
  1 for Failed), the others with 0. Ending in Running, the pod runs until it is deleted (a
  follower of its log blocks, as on a cluster).
- `"started": false`: the containers never start (waiting, CreateContainerConfigError) and
  leave no log, whatever the phase.
- The phase `Gone`: someone deletes the pod's Job (background propagation): the garbage
  collector of the double removes the pod, and no replacement comes.
- No rule matches: ["Pending", "Running", "Succeeded"], exit 0, no log.

Deletion ends the pod at once (no grace period). Everything else (the Job controller, owner
references, RBAC, validation) is the double's, unchanged."""

import json
import os
import re
import threading
import time

import resources
from api import now

PODS = resources.BY_KEY[("", "pods")]
JOBS = resources.BY_KEY[("batch", "jobs")]
NODE = "sts-node-1"
DEFAULT = {"phases": ["Pending", "Running", "Succeeded"]}


class ScriptedKubelet:
    def __init__(self, api, server, state_dir):
        self.api, self.server = api, server
        self.script_path = os.path.join(state_dir, "kubelet-script.json")
        self.log_dir = os.path.join(state_dir, "kubelet", "logs")
        os.makedirs(self.log_dir, exist_ok=True)
        self.workers = {}
        self.running = set()  # (ns, pod, container)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        server.logs = self.log_path
        server.container_running = lambda ns, pod, c: (ns, pod, c) in self.running
        api.kubelet_active = True

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()

    def log_path(self, ns, pod, container):
        obj = self.api.store.peek(PODS.key, ns, pod)
        if obj is None:
            return None
        return os.path.join(self.log_dir, f"{ns}_{pod}_{obj['metadata']['uid']}", f"{container}.log")

    def rule(self, name):
        try:
            with open(self.script_path, encoding="utf-8") as f:
                rules = json.load(f)
        except FileNotFoundError:
            rules = []
        for r in rules:
            if re.search(r["pod"], name):
                return r
        return DEFAULT

    def _loop(self):
        while not self._stop.wait(0.02):
            for pod in self.api.store.items(PODS.key, None):
                meta = pod["metadata"]
                if meta.get("deletionTimestamp"):
                    self._end(meta["namespace"], meta["name"])
                    self.api.finish_pod_deletion(meta["namespace"], meta["name"])
                    continue
                if meta["uid"] in self.workers or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    continue
                t = threading.Thread(target=self._walk, args=(meta["namespace"], meta["name"], meta["uid"]),
                                     daemon=True)
                self.workers[meta["uid"]] = t
                t.start()

    def _end(self, ns, name):
        for key in [k for k in self.running if k[:2] == (ns, name)]:
            self.running.discard(key)

    def _update(self, ns, name, uid, fn):
        with self.api.store.lock:
            pod = self.api.store.get(PODS.key, ns, name)
            if pod is None or pod["metadata"]["uid"] != uid or pod["metadata"].get("deletionTimestamp"):
                return None
            fn(pod)
            return self.api.put(PODS, pod)

    def _walk(self, ns, name, uid):
        rule = self.rule(name)
        phases, step = rule["phases"], rule.get("step", 0.05)
        for i, phase in enumerate(phases):
            if i:
                time.sleep(step)
            if phase == "Gone":
                return self._delete_job(ns, name, uid)
            if self._update(ns, name, uid, lambda pod, p=phase: self._set(pod, p, rule)) is None:
                return

    def _delete_job(self, ns, name, uid):
        pod = self.api.store.get(PODS.key, ns, name)
        if pod is None or pod["metadata"]["uid"] != uid:
            return
        for ref in pod["metadata"].get("ownerReferences") or []:
            if ref["kind"] == "Job":
                self.api.delete(JOBS, ns, ref["name"], {"propagationPolicy": "Background"})

    def _set(self, pod, phase, rule):
        spec, st, meta = pod["spec"], pod.setdefault("status", {}), pod["metadata"]
        spec["nodeName"] = NODE
        st.update(phase=phase, hostIP="127.0.0.1", podIP="127.0.0.1", podIPs=[{"ip": "127.0.0.1"}],
                  startTime=st.get("startTime") or now())
        containers = spec.get("containers") or []
        init = spec.get("initContainers") or []
        conds = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]
        if phase == "Pending":
            waiting = {"waiting": {"reason": "PodInitializing" if init else "ContainerCreating"}}
            st["containerStatuses"] = [self._cstatus(c, dict(waiting)) for c in containers]
            if init:
                st["initContainerStatuses"] = [self._cstatus(c, dict(waiting)) for c in init]
        elif rule.get("started", True) is False:
            waiting = {"waiting": {"reason": "CreateContainerConfigError"}}
            st["containerStatuses"] = [self._cstatus(c, dict(waiting)) for c in containers]
        else:
            if init:
                st["initContainerStatuses"] = [self._cstatus(c, self._terminated(0)) for c in init]
            ns, name = meta["namespace"], meta["name"]
            if phase == "Running":
                self._write_log(pod, containers[0]["name"], rule.get("logs") or [])
                self.running.update((ns, name, c["name"]) for c in containers)
                st["containerStatuses"] = [self._cstatus(c, {"running": {"startedAt": now()}}) for c in containers]
            else:
                if not os.path.exists(self.log_path(ns, name, containers[0]["name"]) or ""):
                    self._write_log(pod, containers[0]["name"], rule.get("logs") or [])
                code = rule.get("exit", 0 if phase == "Succeeded" else 1)
                st["containerStatuses"] = [self._cstatus(c, self._terminated(code if i == 0 else 0))
                                           for i, c in enumerate(containers)]
                self._end(ns, name)
            ready = phase == "Running"
            conds += [{"type": t, "status": "True" if t == "Initialized" or ready else "False",
                       "lastTransitionTime": now()} for t in ("Initialized", "Ready", "ContainersReady")]
        st["conditions"] = conds

    def _write_log(self, pod, container, lines):
        path = self.log_path(pod["metadata"]["namespace"], pod["metadata"]["name"], container)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.writelines(f"{line}\n" for line in lines)

    @staticmethod
    def _terminated(code):
        return {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error",
                               "startedAt": now(), "finishedAt": now()}}

    @staticmethod
    def _cstatus(c, state):
        return {"name": c["name"], "image": c.get("image", ""), "imageID": "", "ready": "running" in state,
                "restartCount": 0, "started": "running" in state, "state": state}
