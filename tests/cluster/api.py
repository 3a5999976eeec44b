"""The REST semantics of the Kubernetes API double: create/get/list/update/patch/delete with
resourceVersion conflicts, generateName, defaulting, schema validation, subresources (status, scale,
token), owner references and cascading deletion, finalizers. Transport-free: the HTTP layer
(server.py) and the controllers call the same methods."""

import base64
import copy
import datetime
import json
import re
import secrets
import uuid

import yaml

import patches
import resources
import selection
import validation
from store import Store

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUFFIX_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's generateName alphabet


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n=5):
    return "".join(secrets.choice(_SUFFIX_CHARS) for _ in range(n))


class ApiError(Exception):
    """A failure answered as a metav1.Status."""

    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self):
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


def not_found(res, name):
    return ApiError(404, "NotFound", f'{res.qualified} "{name}" not found',
                    {"name": name, "group": res.group, "kind": res.plural})


def invalid(res, name, causes):
    """422 with the real aggregate message: Kind.group "name" is invalid: [field: msg, ...]."""
    kind = f"{res.kind}.{res.group}" if res.group else res.kind
    parts = [f"{f}: {m}" for f, _, m in causes]
    text = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    return ApiError(422, "Invalid", f'{kind} "{name}" is invalid: {text}',
                    {"name": name, "group": res.group, "kind": res.kind,
                     "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes]})


class Api:
    def __init__(self, k8s_version="1.34", ca_pem=""):
        self.version = k8s_version
        self.ca_pem = ca_pem  # published in every namespace as ConfigMap kube-root-ca.crt
        self.store = Store()
        self.tokens = {}  # bearer token -> (user, groups)
        self.hooks = []  # callables(key, obj, event) run after each write, under the store lock
        self.kubelet_active = False  # pods on a node then terminate gracefully through the kubelet
        for ns in SYSTEM_NAMESPACES:
            self.create(resources.BY_KEY[("", "namespaces")], None, {"metadata": {"name": ns}})

    # ---- helpers -------------------------------------------------------------------------------

    def _emit(self, key, obj, event):
        for hook in self.hooks:
            hook(key, obj, event)

    def _write(self, res, obj, event):
        stored = self.store.write(res.key, obj, event)
        self._emit(res.key, stored, event)
        return stored

    def put(self, res, obj):
        """A system component's write (scheduler binding, kubelet status): no validation, no RBAC."""
        return self._write(res, obj, "MODIFIED")

    def get(self, res, namespace, name):
        obj = self.store.get(res.key, namespace if res.namespaced else None, name)
        if obj is None:
            raise not_found(res, name)
        return obj

    def list(self, res, namespace, label_selector="", field_selector=""):
        try:
            lreqs = selection.parse_labels(label_selector)
            freqs = selection.parse_fields(field_selector, res.plural, res.kind, res.api_version)
        except selection.SelectorError as e:
            raise ApiError(400, "BadRequest", f"unable to parse requirement: {e}") from e
        with self.store.lock:
            items = [copy.deepcopy(o) for o in self.store.items(res.key, namespace if res.namespaced else None)
                     if selection.labels_match(lreqs, o["metadata"].get("labels"))
                     and selection.fields_match(freqs, o)]
            rv = str(self.store.revision)
        return {"kind": f"{res.kind}List", "apiVersion": res.api_version,
                "metadata": {"resourceVersion": rv}, "items": items}

    def _check_namespace(self, res, namespace):
        if not res.namespaced:
            return None
        if not namespace:
            raise ApiError(400, "BadRequest", "the server could not find the requested resource")
        ns = self.store.peek(("", "namespaces"), None, namespace)
        if ns is None:
            raise not_found(resources.BY_KEY[("", "namespaces")], namespace)
        return ns

    def _validate(self, res, obj, field_validation, warnings):
        """Schema check of the object as the client sent it (before server-side defaulting)."""
        if obj.get("apiVersion") is None:
            obj["apiVersion"] = res.api_version
        if obj.get("kind") is None:
            obj["kind"] = res.kind
        if (obj["apiVersion"], obj["kind"]) != (res.api_version, res.kind):
            raise ApiError(400, "BadRequest",
                           f"the API version in the data ({obj['apiVersion']}) does not match the expected "
                           f"API version ({res.api_version})" if obj["apiVersion"] != res.api_version else
                           f"the kind in the data ({obj['kind']}) does not match the expected kind ({res.kind})")
        probs = validation.check(self.version, obj)
        name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get("generateName", "")
        if probs.decode:
            raise ApiError(400, "BadRequest",
                           f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: {probs.decode[0]}')
        if probs.unknown:
            mode = (field_validation or "Warn")
            if mode == "Strict":
                listed = ", ".join(f'unknown field "{p}"' for p in probs.unknown)
                raise ApiError(400, "BadRequest",
                               f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}: '
                               f"strict decoding error: {listed}")
            if mode == "Warn":
                warnings.extend(f'unknown field "{p}"' for p in probs.unknown)
            validation.drop_unknown(obj, probs.unknown)
        if probs.invalid:
            raise invalid(res, name, probs.invalid)

    def _validate_name(self, res, meta):
        name = meta.get("name", "")
        label = res.plural in ("namespaces", "services")
        rx = _DNS1123_LABEL if label else _DNS1123_SUBDOMAIN
        if not rx.match(name) or len(name) > (63 if label else 253):
            what = "RFC 1123 label" if label else "RFC 1123 subdomain"
            chars = "'-'" if label else "'-' or '.'"
            return [("metadata.name", "FieldValueInvalid",
                     f'Invalid value: "{name}": a lowercase {what} must consist of lower case alphanumeric '
                     f"characters, {chars}, and must start and end with an alphanumeric character")]
        return []

    # ---- create --------------------------------------------------------------------------------

    def create(self, res, namespace, obj, field_validation=None, warnings=None, dry_run=False):
        warnings = [] if warnings is None else warnings
        obj = copy.deepcopy(obj)
        self._validate(res, obj, field_validation, warnings)
        meta = obj.setdefault("metadata", {})
        if res.namespaced:
            if meta.get("namespace") and namespace and meta["namespace"] != namespace:
                raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the "
                                                  "namespace sent on the request")
            namespace = namespace or meta.get("namespace")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        with self.store.lock:
            ns = self._check_namespace(res, namespace)
            if ns is not None and ns.get("status", {}).get("phase") == "Terminating":
                raise ApiError(403, "Forbidden", f'{res.qualified} "{meta.get("name", "")}" is forbidden: unable '
                                                 f"to create new content in namespace {namespace} because it is "
                                                 "being terminated")
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise invalid(res, "", [("metadata.name", "FieldValueRequired", "Required value: name or "
                                                                                   "generateName is required")])
                for _ in range(10):
                    meta["name"] = meta["generateName"] + random_suffix()
                    if self.store.peek(res.key, namespace, meta["name"]) is None:
                        break
            causes = self._validate_name(res, meta)
            if causes:
                raise invalid(res, meta["name"], causes)
            if self.store.peek(res.key, namespace if res.namespaced else None, meta["name"]) is not None:
                raise ApiError(409, "AlreadyExists", f'{res.qualified} "{meta["name"]}" already exists',
                               {"name": meta["name"], "group": res.group, "kind": res.plural})
            for k in ("resourceVersion", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
                meta.pop(k, None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now()
            if "spec" in obj or res.plural in ("deployments", "statefulsets", "jobs", "cronjobs"):
                meta["generation"] = 1
            self._admit(res, obj, namespace)
            if dry_run:
                return obj
            stored = self._write(res, obj, "ADDED")
            if res.plural == "namespaces":
                sa = resources.BY_KEY[("", "serviceaccounts")]
                self.create(sa, meta["name"], {"metadata": {"name": "default"}})
                self.create(resources.BY_KEY[("", "configmaps")], meta["name"],
                            {"metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": self.ca_pem}})
            return stored

    def _admit(self, res, obj, namespace):
        """Defaulting and admission the real server applies on create (the parts the product sees)."""
        kind, spec = res.kind, obj.setdefault("spec", {}) if res.kind not in (
            "ConfigMap", "Secret", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
            "Event", "Namespace") else None
        meta = obj["metadata"]
        if kind == "Namespace":
            obj["status"] = {"phase": "Active"}
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        elif kind == "Secret":
            obj.setdefault("type", "Opaque")
            for k, v in (obj.pop("stringData", None) or {}).items():
                obj.setdefault("data", {})[k] = base64.b64encode(v.encode()).decode()
        elif kind == "Pod":
            self._admit_pod(obj, namespace)
        elif kind == "Job":
            self._default_job(obj)
        elif kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            self._default_workload(kind, spec)
            self._check_selector(res, obj)
            obj["status"] = {"replicas": 0, "observedGeneration": 0}
        elif kind == "CronJob":
            spec.setdefault("concurrencyPolicy", "Allow")
            spec.setdefault("suspend", False)
            spec.setdefault("successfulJobsHistoryLimit", 3)
            spec.setdefault("failedJobsHistoryLimit", 1)
            obj["status"] = {}
        elif kind == "Service":
            spec.setdefault("type", "ClusterIP")
            spec.setdefault("sessionAffinity", "None")
            if spec.get("clusterIP") != "None":
                n = sum(1 for _ in self.store.items(("", "services"), None)) + 10
                spec["clusterIP"] = f"10.96.{n // 250}.{n % 250 + 1}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            for p in spec.get("ports") or []:
                p.setdefault("protocol", "TCP")
                p.setdefault("targetPort", p.get("port"))
            obj["status"] = {"loadBalancer": {}}
        elif kind == "PersistentVolumeClaim":
            # No provisioner: every claim binds at once to a volume the kubelet keeps on disk.
            spec.setdefault("volumeMode", "Filesystem")
            spec["volumeName"] = f"pvc-{meta['uid']}"
            obj["status"] = {"phase": "Bound", "accessModes": spec.get("accessModes", []),
                             "capacity": (spec.get("resources") or {}).get("requests", {})}
        elif kind == "Role" or kind == "ClusterRole":
            obj.setdefault("rules", [])

    @staticmethod
    def _default_workload(kind, spec):
        """The apps/v1 SetDefaults_* the server applies on every create and update (so a patch that
        drops a defaulted field, e.g. helm's `$retainKeys` on `strategy`, gets it back)."""
        if kind not in ("Deployment", "StatefulSet", "ReplicaSet"):
            return
        spec.setdefault("replicas", 1)
        if kind == "Deployment":
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
            # a RollingUpdate strategy always carries both bounds
            strategy = spec.setdefault("strategy", {})
            strategy.setdefault("type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                bounds = strategy.setdefault("rollingUpdate", {})
                bounds.setdefault("maxSurge", "25%")
                bounds.setdefault("maxUnavailable", "25%")
        if kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            update = spec.setdefault("updateStrategy", {})
            update.setdefault("type", "RollingUpdate")
            if update["type"] == "RollingUpdate":
                update.setdefault("rollingUpdate", {}).setdefault("partition", 0)

    def _check_selector(self, res, obj):
        spec = obj["spec"]
        reqs = selection.label_selector_from_object(spec.get("selector"))
        labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if not spec.get("selector"):
            raise invalid(res, obj["metadata"]["name"], [("spec.selector", "FieldValueRequired", "Required value")])
        if not selection.labels_match(reqs, labels):
            raise invalid(res, obj["metadata"]["name"], [
                ("spec.template.metadata.labels", "FieldValueInvalid",
                 f"Invalid value: {json.dumps(labels, separators=(',', ':'))}: `selector` does not match "
                 "template `labels`")])

    def _default_job(self, obj):
        spec, meta = obj["spec"], obj["metadata"]
        spec.setdefault("parallelism", 1)
        spec.setdefault("completions", 1)
        spec.setdefault("backoffLimit", 6)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("manualSelector", False) if spec.get("manualSelector") else None
        template = spec.setdefault("template", {})
        policy = (template.get("spec") or {}).get("restartPolicy")
        if policy not in ("Never", "OnFailure"):
            raise invalid(resources.BY_KEY[("batch", "jobs")], meta["name"], [
                ("spec.template.spec.restartPolicy", "FieldValueNotSupported",
                 f'Unsupported value: "{policy or "Always"}": supported values: "OnFailure", "Never"')])
        uid = meta["uid"]
        labels = {"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": meta["name"],
                  "controller-uid": uid, "job-name": meta["name"]}
        if not spec.get("manualSelector"):
            spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
            template.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        obj["status"] = {}

    def _admit_pod(self, obj, namespace):
        spec, meta = obj["spec"], obj["metadata"]
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("dnsPolicy", "ClusterFirst")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        spec.setdefault("securityContext", {})
        sa_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = spec["serviceAccount"] = sa_name
        sa = self.store.peek(("", "serviceaccounts"), namespace, sa_name)
        if sa is None:
            raise ApiError(403, "Forbidden", f'pods "{meta["name"]}" is forbidden: error looking up service '
                                             f'account {namespace}/{sa_name}: serviceaccount "{sa_name}" not found',
                           {"name": meta["name"], "kind": "pods"})
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            tag = c.get("image", "").rsplit("/", 1)[-1]
            c.setdefault("imagePullPolicy", "Always" if ":" not in tag or tag.endswith(":latest") else "IfNotPresent")
            c.setdefault("terminationMessagePath", "/dev/termination-log")
            c.setdefault("terminationMessagePolicy", "File")
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            automount = sa.get("automountServiceAccountToken", True)
        if automount:
            vol = f"kube-api-access-{random_suffix()}"
            spec.setdefault("volumes", []).append({"name": vol, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                if not any(m.get("mountPath") == "/var/run/secrets/kubernetes.io/serviceaccount"
                           for m in c.get("volumeMounts") or []):
                    c.setdefault("volumeMounts", []).append({"name": vol, "readOnly": True,
                                                             "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"})
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}

    # ---- update / patch ------------------------------------------------------------------------

    def update(self, res, namespace, name, obj, field_validation=None, warnings=None, subresource=None,
               dry_run=False):
        warnings = [] if warnings is None else warnings
        obj = copy.deepcopy(obj)
        self._validate(res, obj, field_validation, warnings)
        with self.store.lock:
            current = self.store.get(res.key, namespace if res.namespaced else None, name)
            if current is None:
                raise not_found(res, name)
            meta = obj.setdefault("metadata", {})
            if meta.get("name") and meta["name"] != name:
                raise ApiError(400, "BadRequest", "the name of the object "
                                                  f"({meta['name']}) does not match the name on the URL ({name})")
            want_rv = meta.get("resourceVersion")
            if want_rv and want_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the '
                                                "object has been modified; please apply your changes to the "
                                                "latest version and try again",
                               {"name": name, "group": res.group, "kind": res.plural})
            new = self._merge_update(res, current, obj, subresource)
            if new == current:
                return current
            if dry_run:
                return new
            stored = self._write(res, new, "MODIFIED")
            return self._maybe_finish_delete(res, stored)

    def _merge_update(self, res, current, obj, subresource):
        """What a PUT changes: the status subresource only status; the main resource everything but
        status (for kinds with a status subresource) and the server-owned metadata."""
        keep = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation",
                "resourceVersion", "namespace", "name")
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = obj.get("status", {})
            return new
        new = copy.deepcopy(obj)
        for k in keep:
            if k in current["metadata"]:
                new["metadata"][k] = current["metadata"][k]
            else:
                new["metadata"].pop(k, None)
        if "status" in res.subresources:
            if "status" in current:
                new["status"] = current["status"]
            else:
                new.pop("status", None)
        if current["metadata"].get("deletionTimestamp") and \
                set(new["metadata"].get("finalizers") or []) - set(current["metadata"].get("finalizers") or []):
            raise invalid(res, current["metadata"]["name"], [("metadata.finalizers", "FieldValueForbidden",
                                                               "Forbidden: no new finalizers can be added if the "
                                                               "object is being deleted")])
        if "spec" in new:
            self._default_workload(res.kind, new["spec"])
        self._check_immutable(res, current, new)
        if res.kind == "Secret":
            for k, v in (new.pop("stringData", None) or {}).items():
                new.setdefault("data", {})[k] = base64.b64encode(v.encode()).decode()
        if new.get("spec") != current.get("spec") and "generation" in current["metadata"]:
            new["metadata"]["generation"] = current["metadata"]["generation"] + 1
        return new

    def _check_immutable(self, res, old, new):
        name = old["metadata"]["name"]
        if res.kind in ("Secret", "ConfigMap") and old.get("immutable"):
            if any(old.get(k) != new.get(k) for k in ("data", "binaryData", "stringData", "immutable")):
                raise invalid(res, name, [("data", "FieldValueForbidden",
                                           "Forbidden: field is immutable when `immutable` is set")])
        if res.kind == "Job":
            for f in ("template", "selector", "completions", "completionMode"):
                if old["spec"].get(f) != new.get("spec", {}).get(f):
                    raise invalid(res, name, [(f"spec.{f}", "FieldValueInvalid", "Invalid value: field is immutable")])
        if res.kind in ("Deployment", "StatefulSet", "ReplicaSet"):
            if old["spec"].get("selector") != new.get("spec", {}).get("selector"):
                raise invalid(res, name, [("spec.selector", "FieldValueInvalid",
                                           "Invalid value: field is immutable")])
            self._check_selector(res, new)
        if res.kind == "Pod":
            def mutable_view(spec):
                spec = copy.deepcopy(spec)
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    c.pop("image", None)
                for k in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds"):
                    spec.pop(k, None)
                return spec
            if mutable_view(old["spec"]) != mutable_view(new.get("spec", {})):
                raise invalid(res, name, [("spec", "FieldValueForbidden",
                                           "Forbidden: pod updates may not change fields other than "
                                           "`spec.containers[*].image`,`spec.initContainers[*].image`,"
                                           "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
                                           "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it "
                                           "to be set to 1 if it was previously negative)")])

    def patch(self, res, namespace, name, body, content_type, field_validation=None, warnings=None,
              subresource=None, field_manager=None, force=False, dry_run=False):
        ct = content_type.split(";")[0].strip()
        try:
            patch = yaml.safe_load(body) if ct == "application/apply-patch+yaml" else json.loads(body or b"null")
        except (ValueError, yaml.YAMLError) as e:
            raise ApiError(400, "BadRequest", f"error decoding patch: {e}") from e
        with self.store.lock:
            current = self.store.get(res.key, namespace if res.namespaced else None, name)
            if current is None:
                if ct == "application/apply-patch+yaml":
                    if not field_manager:
                        raise ApiError(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                                                       "Required value: is required for apply patch")
                    return self.create(res, namespace, patch, "Strict", warnings, dry_run)
                raise not_found(res, name)
            try:
                if ct == "application/merge-patch+json":
                    new = patches.merge_patch(current, patch)
                elif ct == "application/json-patch+json":
                    new = patches.json_patch(current, patch)
                elif ct == "application/strategic-merge-patch+json":
                    new = patches.strategic_merge(current, patch)
                elif ct == "application/apply-patch+yaml":
                    if not field_manager:
                        raise ApiError(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: "
                                                       "Required value: is required for apply patch")
                    new = patches.strategic_merge(current, patch)
                    field_validation = "Strict"
                else:
                    raise ApiError(415, "UnsupportedMediaType",
                                   f"the body of the request was in an unknown format - accepted media types "
                                   "include: application/json-patch+json, application/merge-patch+json, "
                                   "application/apply-patch+yaml, application/strategic-merge-patch+json")
            except patches.PatchError as e:
                raise ApiError(422 if ct == "application/json-patch+json" else 400,
                               "Invalid" if ct == "application/json-patch+json" else "BadRequest", str(e)) from e
            if not (isinstance(patch, dict) and (patch.get("metadata") or {}).get("resourceVersion")):
                new.setdefault("metadata", {})["resourceVersion"] = current["metadata"]["resourceVersion"]
            return self.update(res, namespace, name, new, field_validation, warnings, subresource, dry_run)

    # ---- scale subresource ---------------------------------------------------------------------

    def get_scale(self, res, namespace, name):
        obj = self.get(res, namespace, name)
        return self._scale_of(obj)

    @staticmethod
    def _scale_of(obj):
        sel = selection.label_selector_from_object(obj["spec"].get("selector"))
        text = ",".join(f"{k}={v[0]}" if op == "=" else k for k, op, v in sel)
        return {"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"],
                             "uid": obj["metadata"]["uid"], "resourceVersion": obj["metadata"]["resourceVersion"],
                             "creationTimestamp": obj["metadata"]["creationTimestamp"]},
                "spec": {"replicas": obj["spec"].get("replicas", 1)},
                "status": {"replicas": obj.get("status", {}).get("replicas", 0), "selector": text}}

    def update_scale(self, res, namespace, name, scale, field_validation=None, warnings=None):
        probs = validation.check(self.version, scale)
        if probs.decode or probs.invalid:
            raise ApiError(400, "BadRequest", f"Scale cannot be handled: {(probs.decode or probs.invalid)[0]}")
        if probs.unknown and field_validation == "Strict":
            raise ApiError(400, "BadRequest", "Scale in version \"v1\" cannot be handled as a Scale: strict decoding "
                                              f"error: unknown field \"{probs.unknown[0]}\"")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(422, "Invalid", f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                                           f"{replicas}: must be greater than or equal to 0")
        with self.store.lock:
            obj = self.get(res, namespace, name)
            want = (scale.get("metadata") or {}).get("resourceVersion")
            if want and want != obj["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": the '
                                                "object has been modified; please apply your changes to the latest "
                                                "version and try again")
            obj["spec"]["replicas"] = replicas
            return self._scale_of(self.update(res, namespace, name, obj))

    def patch_scale(self, res, namespace, name, body, content_type, field_validation=None, warnings=None):
        with self.store.lock:
            scale = self.get_scale(res, namespace, name)
            ct = content_type.split(";")[0].strip()
            patch = json.loads(body)
            if ct == "application/json-patch+json":
                new = patches.json_patch(scale, patch)
            else:
                new = patches.strategic_merge(scale, patch) if "strategic" in ct else patches.merge_patch(scale, patch)
            if not (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else True:
                new["metadata"]["resourceVersion"] = scale["metadata"]["resourceVersion"]
            return self.update_scale(res, namespace, name, new, field_validation, warnings)

    # ---- tokens --------------------------------------------------------------------------------

    def create_token(self, namespace, name, request=None):
        sa_res = resources.BY_KEY[("", "serviceaccounts")]
        sa = self.get(sa_res, namespace, name)
        seconds = ((request or {}).get("spec") or {}).get("expirationSeconds") or 3600
        token = "sts-" + secrets.token_urlsafe(24)
        user = f"system:serviceaccount:{namespace}:{name}"
        self.tokens[token] = (user, ["system:serviceaccounts", f"system:serviceaccounts:{namespace}",
                                     "system:authenticated"], sa["metadata"]["uid"])
        expires = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds))
        return {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": namespace, "creationTimestamp": None},
                "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"],
                         "expirationSeconds": seconds, "boundObjectRef": None},
                "status": {"token": token, "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}}

    def authenticate_token(self, token):
        entry = self.tokens.get(token)
        if entry is None:
            return None
        user, groups, sa_uid = entry
        ns, name = user.split(":")[2:4]
        sa = self.store.peek(("", "serviceaccounts"), ns, name)
        if sa is None or sa["metadata"]["uid"] != sa_uid:
            return None  # a token outlives neither its ServiceAccount nor a recreated one
        return user, groups

    # ---- delete and garbage collection ---------------------------------------------------------

    def delete(self, res, namespace, name, options=None):
        options = options or {}
        policy = options.get("propagationPolicy")
        if policy is None:
            orphan = options.get("orphanDependents")
            # batch/v1 Jobs orphan their pods by default (the REST strategy's default GC policy)
            policy = "Orphan" if orphan or (orphan is None and res.kind == "Job") else "Background"
        if policy not in ("Orphan", "Background", "Foreground"):
            raise ApiError(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported '
                                           f'value: "{policy}": supported values: "Foreground", "Background", "Orphan"')
        with self.store.lock:
            obj = self.get(res, namespace, name)
            pre = options.get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != obj["metadata"]["uid"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                                                f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                                                f"object meta: {obj['metadata']['uid']}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != obj["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on {res.qualified} "{name}": '
                                                "Precondition failed: ResourceVersion in precondition: "
                                                f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                                                f"{obj['metadata']['resourceVersion']}")
            meta = obj["metadata"]
            if res.kind == "Namespace":
                return self._delete_namespace(res, obj)
            grace = options.get("gracePeriodSeconds")
            graceful = (res.kind == "Pod" and self.kubelet_active and obj["spec"].get("nodeName")
                        and grace != 0 and obj.get("status", {}).get("phase") not in ("Succeeded", "Failed"))
            finalizers = list(meta.get("finalizers") or [])
            if policy == "Foreground" and self._dependents(meta["uid"]):
                finalizers.append("foregroundDeletion")
            if policy == "Orphan" and self._dependents(meta["uid"]):
                self._orphan(meta["uid"])
            if finalizers or graceful:
                if meta.get("deletionTimestamp"):
                    return obj
                meta["deletionTimestamp"] = now()
                meta["finalizers"] = finalizers or None
                if not finalizers:
                    meta.pop("finalizers")
                if graceful:
                    meta["deletionGracePeriodSeconds"] = grace if grace is not None else \
                        obj["spec"].get("terminationGracePeriodSeconds", 30)
                stored = self._write(res, obj, "MODIFIED")
                if policy == "Foreground":
                    self._collect(meta["uid"], "Foreground")
                return stored
            gone = self.store.remove(res.key, obj)
            self._emit(res.key, gone, "DELETED")
            if policy != "Orphan":
                self._collect(meta["uid"], "Background")
            return gone

    def _dependents(self, uid):
        return [(k, o) for k, o in self.store.all_items()
                if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    def _orphan(self, uid):
        for key, o in self._dependents(uid):
            o = copy.deepcopy(o)
            o["metadata"]["ownerReferences"] = [r for r in o["metadata"]["ownerReferences"] if r.get("uid") != uid]
            if not o["metadata"]["ownerReferences"]:
                del o["metadata"]["ownerReferences"]
            self._write(resources.BY_KEY[key], o, "MODIFIED")

    def _collect(self, uid, policy):
        """The garbage collector: dependents whose owner is gone (or deleting in foreground)."""
        for key, o in self._dependents(uid):
            res = resources.BY_KEY[key]
            try:
                self.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"],
                            {"propagationPolicy": policy})
            except ApiError:
                pass

    def _maybe_finish_delete(self, res, obj):
        """An object being deleted goes once its last finalizer is removed."""
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers") and res.kind != "Pod":
            gone = self.store.remove(res.key, obj)
            self._emit(res.key, gone, "DELETED")
            self._collect(meta["uid"], "Background")
            return gone
        return obj

    def gc_foreground(self):
        """Owners in foreground deletion lose the finalizer once no dependent is left."""
        with self.store.lock:
            for key, o in list(self.store.all_items()):
                fin = o["metadata"].get("finalizers") or []
                if "foregroundDeletion" in fin and not self._dependents(o["metadata"]["uid"]):
                    o = copy.deepcopy(o)
                    o["metadata"]["finalizers"] = [f for f in fin if f != "foregroundDeletion"]
                    if not o["metadata"]["finalizers"]:
                        del o["metadata"]["finalizers"]
                    self._maybe_finish_delete(resources.BY_KEY[key], self._write(resources.BY_KEY[key], o,
                                                                                   "MODIFIED"))

    def finish_pod_deletion(self, namespace, name):
        """What the kubelet does once the containers of a deleting pod are gone."""
        res = resources.BY_KEY[("", "pods")]
        with self.store.lock:
            obj = self.store.peek(res.key, namespace, name)
            if obj is None:
                return
            if obj["metadata"].get("finalizers"):
                return
            gone = self.store.remove(res.key, obj)
            self._emit(res.key, gone, "DELETED")

    def _delete_namespace(self, res, obj):
        name = obj["metadata"]["name"]
        if name in SYSTEM_NAMESPACES:
            raise ApiError(403, "Forbidden", f'namespaces "{name}" is forbidden: this namespace may not be deleted')
        obj["status"] = {"phase": "Terminating"}
        obj["metadata"]["deletionTimestamp"] = now()
        stored = self._write(res, obj, "MODIFIED")
        for key, o in list(self.store.all_items()):
            if o["metadata"].get("namespace") == name:
                r = resources.BY_KEY[key]
                cur = self.store.peek(key, name, o["metadata"]["name"])
                if cur is not None:
                    self.delete(r, name, o["metadata"]["name"], {"propagationPolicy": "Background",
                                                                  "gracePeriodSeconds": 0})
        self.store.remove(res.key, stored)
        self._emit(res.key, stored, "DELETED")
        return stored


def owner_ref(obj, controller=True):
    return {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": controller, "blockOwnerDeletion": True}


def pod_from_template(template, namespace, owner, generate_name=None, name=None):
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": copy.deepcopy(template.get("metadata") or {}), "spec": copy.deepcopy(template["spec"])}
    meta = pod["metadata"]
    meta["namespace"] = namespace
    if name:
        meta["name"] = name
    else:
        meta["generateName"] = generate_name
    meta["ownerReferences"] = [owner_ref(owner)]
    return pod

