"""The controllers the product relies on, reconciling by polling the store (every 0.2 s):
Job → Pods (parallelism, completions, backoffLimit with back-off, activeDeadlineSeconds,
ttlSecondsAfterFinished), Deployment → ReplicaSet → Pods, StatefulSet → ordinal Pods, and the
garbage collector's foreground-deletion step."""

import copy
import datetime
import hashlib
import json
import os
import threading

import resources
from api import ApiError, now, owner_ref, pod_from_template

PODS = resources.BY_KEY[("", "pods")]
JOBS = resources.BY_KEY[("batch", "jobs")]
DEPLOYMENTS = resources.BY_KEY[("apps", "deployments")]
REPLICASETS = resources.BY_KEY[("apps", "replicasets")]
STATEFULSETS = resources.BY_KEY[("apps", "statefulsets")]

# The real job controller waits 10 s × 2^(n-1) (capped at 6 min) before recreating a failed pod; the
# double shortens the base so retry tests stay fast (tests/e2e/README.md lists this deviation).
BACKOFF_BASE = float(os.environ.get("STS_CLUSTER_JOB_BACKOFF_SECONDS", "1"))


def _parse_time(text):
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)


def _age(text):
    return (datetime.datetime.now(datetime.timezone.utc) - _parse_time(text)).total_seconds()


def _owned(api, res, namespace, uid):
    return [p for p in api.store.items(res.key, namespace)
            if any(r.get("uid") == uid and r.get("controller") for r in p["metadata"].get("ownerReferences") or [])]


class Controllers:
    def __init__(self, api, interval=0.2):
        self.api = api
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.errors = []

    def start(self):
        self._thread.start()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self):
        while not self._stop.wait(self.interval):
            self.reconcile()

    def reconcile(self):
        for step in (self._jobs, self._deployments, self._replicasets, self._statefulsets, self.api.gc_foreground):
            try:
                step()
            except ApiError as e:
                if e.code not in (404, 409):
                    self.errors.append(f"{step.__name__}: {e.message}")
            except Exception as e:  # noqa: BLE001  a controller bug must not stop the others
                self.errors.append(f"{step.__name__}: {e!r}")
                import traceback
                traceback.print_exc()

    # ---- Jobs ----------------------------------------------------------------------------------

    def _jobs(self):
        api = self.api
        for job in api.store.items(JOBS.key, None):
            meta, spec = job["metadata"], job["spec"]
            ns = meta["namespace"]
            status = copy.deepcopy(job.get("status") or {})
            finished = next((c["type"] for c in status.get("conditions", [])
                             if c["type"] in ("Complete", "Failed") and c["status"] == "True"), None)
            if finished:
                ttl = spec.get("ttlSecondsAfterFinished")
                done_at = status.get("completionTime") or next(
                    (c["lastTransitionTime"] for c in status["conditions"] if c["type"] == finished), None)
                if ttl is not None and done_at and _age(done_at) >= ttl and not meta.get("deletionTimestamp"):
                    api.delete(JOBS, ns, meta["name"], {"propagationPolicy": "Background"})
                continue
            if meta.get("deletionTimestamp") or spec.get("suspend"):
                continue
            pods = _owned(api, PODS, ns, meta["uid"])
            phase = {p["metadata"]["name"]: p.get("status", {}).get("phase") for p in pods}
            active = [p for p in pods if phase[p["metadata"]["name"]] in ("Pending", "Running")
                      and not p["metadata"].get("deletionTimestamp")]
            succeeded = sum(1 for v in phase.values() if v == "Succeeded")
            failed = sum(1 for v in phase.values() if v == "Failed") + sum(
                cs.get("restartCount", 0) for p in pods for cs in p.get("status", {}).get("containerStatuses", []))
            status.setdefault("startTime", now())
            completions = spec.get("completions", 1)
            reason = None
            if failed > spec.get("backoffLimit", 6):
                reason = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
            deadline = spec.get("activeDeadlineSeconds")
            if deadline is not None and _age(status["startTime"]) >= deadline:
                reason = ("DeadlineExceeded", "Job was active longer than specified deadline")
            if reason:
                for p in active:
                    api.delete(PODS, ns, p["metadata"]["name"], {"propagationPolicy": "Background"})
                t = now()
                status["conditions"] = status.get("conditions", []) + [
                    {"type": "FailureTarget", "status": "True", "reason": reason[0], "message": reason[1],
                     "lastProbeTime": t, "lastTransitionTime": t},
                    {"type": "Failed", "status": "True", "reason": reason[0], "message": reason[1],
                     "lastProbeTime": t, "lastTransitionTime": t}]
                active = []
            elif succeeded >= completions:
                t = now()
                status["conditions"] = status.get("conditions", []) + [
                    {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", "lastProbeTime": t,
                     "lastTransitionTime": t},
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                     "message": "Reached expected number of succeeded pods", "lastProbeTime": t,
                     "lastTransitionTime": t}]
                status["completionTime"] = t
            else:
                want = min(spec.get("parallelism", 1), completions - succeeded) - len(active)
                last_fail = max((cs.get("state", {}).get("terminated", {}).get("finishedAt", "")
                                 for p in pods if phase[p["metadata"]["name"]] == "Failed"
                                 for cs in p.get("status", {}).get("containerStatuses", [])), default="")
                delay = min(BACKOFF_BASE * (2 ** max(0, failed - 1)), 360) if failed else 0
                if want > 0 and (not last_fail or _age(last_fail) >= delay):
                    for _ in range(want):
                        pod = pod_from_template(spec["template"], ns, job, generate_name=f"{meta['name']}-")
                        try:
                            created = api.create(PODS, ns, pod, "Ignore")
                            active.append(created)
                        except ApiError as e:
                            self._event(job, "Warning", "FailedCreate", f"Error creating: {e.message}")
            status["active"] = len(active) or None
            status["succeeded"] = succeeded or None
            status["failed"] = (sum(1 for v in phase.values() if v == "Failed") or None)
            status["ready"] = sum(1 for p in active if _ready(p))
            status["terminating"] = sum(1 for p in pods if p["metadata"].get("deletionTimestamp"))
            status["uncountedTerminatedPods"] = {}
            status = {k: v for k, v in status.items() if v is not None}
            if status != job.get("status"):
                new = copy.deepcopy(job)
                new["status"] = status
                api.update(JOBS, ns, meta["name"], new, subresource="status")

    def _event(self, obj, type_, reason, message):
        ev_res = resources.BY_KEY[("", "events")]
        meta = obj["metadata"]
        try:
            self.api.create(ev_res, meta["namespace"], {
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
                "involvedObject": {"kind": obj["kind"], "name": meta["name"], "namespace": meta["namespace"],
                                   "uid": meta["uid"], "apiVersion": obj["apiVersion"]},
                "reason": reason, "message": message, "type": type_, "count": 1,
                "firstTimestamp": now(), "lastTimestamp": now(), "source": {"component": "controller-double"}})
        except ApiError:
            pass

    # ---- Deployments, ReplicaSets, StatefulSets ------------------------------------------------

    def _deployments(self):
        api = self.api
        for d in api.store.items(DEPLOYMENTS.key, None):
            meta, spec = d["metadata"], d["spec"]
            if meta.get("deletionTimestamp"):
                continue
            ns = meta["namespace"]
            template = copy.deepcopy(spec["template"])
            h = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
            h = "".join(c if not c.isdigit() or i % 3 else "bcdfg"[int(c) % 5] for i, c in enumerate(h))
            owned = _owned(api, REPLICASETS, ns, meta["uid"])
            current = next((r for r in owned if r["metadata"].get("labels", {}).get("pod-template-hash") == h), None)
            replicas = spec.get("replicas", 1)
            if current is None:
                template.setdefault("metadata", {}).setdefault("labels", {})["pod-template-hash"] = h
                selector = copy.deepcopy(spec["selector"])
                selector.setdefault("matchLabels", {})["pod-template-hash"] = h
                rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                      "metadata": {"name": f"{meta['name']}-{h}", "namespace": ns,
                                   "labels": dict(template["metadata"]["labels"]),
                                   "annotations": {"deployment.kubernetes.io/revision": str(len(owned) + 1)},
                                   "ownerReferences": [owner_ref(d)]},
                      "spec": {"replicas": replicas, "selector": selector, "template": template}}
                current = api.create(REPLICASETS, ns, rs, "Ignore")
            sets = {r["metadata"]["uid"]: r for r in owned + [current]}.values()
            for r in sets:
                want = replicas if r["metadata"]["name"] == current["metadata"]["name"] else 0
                if r["spec"].get("replicas") != want:
                    r = copy.deepcopy(r)
                    r["spec"]["replicas"] = want
                    api.update(REPLICASETS, ns, r["metadata"]["name"], r)
            pods = [p for r in sets for p in _owned(api, PODS, ns, r["metadata"]["uid"])]
            live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
            ready = sum(1 for p in live if _ready(p))
            status = {"observedGeneration": meta.get("generation", 1), "replicas": len(pods),
                      "updatedReplicas": sum(1 for p in live if p["metadata"].get("labels", {}).get(
                          "pod-template-hash") == h),
                      "readyReplicas": ready, "availableReplicas": ready,
                      "unavailableReplicas": max(0, replicas - ready)}
            status = {k: v for k, v in status.items() if v or k in ("observedGeneration", "replicas")}
            status["conditions"] = [{"type": "Available", "status": "True" if ready >= replicas else "False",
                                     "reason": "MinimumReplicasAvailable" if ready >= replicas else
                                     "MinimumReplicasUnavailable"}]
            self._set_status(DEPLOYMENTS, d, status)

    def _replicasets(self):
        api = self.api
        for rs in api.store.items(REPLICASETS.key, None):
            meta = rs["metadata"]
            if meta.get("deletionTimestamp"):
                continue
            ns = meta["namespace"]
            pods = [p for p in _owned(api, PODS, ns, meta["uid"]) if not p["metadata"].get("deletionTimestamp")
                    and p.get("status", {}).get("phase") not in ("Succeeded", "Failed")]
            want = rs["spec"].get("replicas", 1)
            for _ in range(want - len(pods)):
                api.create(PODS, ns, pod_from_template(rs["spec"]["template"], ns, rs,
                                                       generate_name=f"{meta['name']}-"), "Ignore")
            for p in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"], reverse=True)[:max(0, len(pods) - want)]:
                api.delete(PODS, ns, p["metadata"]["name"], {})
            all_pods = _owned(api, PODS, ns, meta["uid"])
            ready = sum(1 for p in all_pods if _ready(p))
            self._set_status(REPLICASETS, rs, {"replicas": len(all_pods), "readyReplicas": ready,
                                               "availableReplicas": ready, "fullyLabeledReplicas": len(all_pods),
                                               "observedGeneration": meta.get("generation", 1)})

    def _statefulsets(self):
        api = self.api
        for s in api.store.items(STATEFULSETS.key, None):
            meta, spec = s["metadata"], s["spec"]
            if meta.get("deletionTimestamp"):
                continue
            ns = meta["namespace"]
            want = spec.get("replicas", 1)
            pods = {p["metadata"]["name"]: p for p in _owned(api, PODS, ns, meta["uid"])}
            for i in range(want):
                name = f"{meta['name']}-{i}"
                if name not in pods:
                    template = copy.deepcopy(spec["template"])
                    template.setdefault("metadata", {}).setdefault("labels", {}).update(
                        {"statefulset.kubernetes.io/pod-name": name, "apps.kubernetes.io/pod-index": str(i)})
                    template["spec"]["hostname"] = name
                    api.create(PODS, ns, pod_from_template(template, ns, s, name=name), "Ignore")
                    break  # OrderedReady: one at a time
            for name, p in pods.items():
                idx = int(name.rsplit("-", 1)[1])
                if idx >= want and not p["metadata"].get("deletionTimestamp"):
                    api.delete(PODS, ns, name, {})
            all_pods = _owned(api, PODS, ns, meta["uid"])
            ready = sum(1 for p in all_pods if _ready(p))
            self._set_status(STATEFULSETS, s, {"replicas": len(all_pods), "readyReplicas": ready,
                                               "availableReplicas": ready, "currentReplicas": len(all_pods),
                                               "updatedReplicas": len(all_pods),
                                               "observedGeneration": meta.get("generation", 1)})

    def _set_status(self, res, obj, status):
        status = {k: v for k, v in status.items() if v or k in ("replicas", "observedGeneration")}
        if obj.get("status") != status:
            new = copy.deepcopy(obj)
            new["status"] = status
            self.api.update(res, obj["metadata"]["namespace"], obj["metadata"]["name"], new, subresource="status")


def _ready(pod):
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in pod.get("status", {}).get("conditions", []))
