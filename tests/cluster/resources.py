"""The API resources the double serves: what discovery lists and what the REST layer accepts."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short: tuple = ()
    subresources: tuple = ()
    verbs: tuple = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
    singular: str = field(default="")

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self):
        """`deployments.apps`, `pods`: how the real server names the resource in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def key(self):
        return (self.group, self.plural)


RESOURCES = (
    Resource("", "v1", "namespaces", "Namespace", False, ("ns",), ("status",),
             ("create", "delete", "get", "list", "patch", "update", "watch")),
    Resource("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    Resource("", "v1", "secrets", "Secret", True),
    Resource("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",), ("token",)),
    Resource("", "v1", "services", "Service", True, ("svc",), ("status",),
             ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")),
    Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
    Resource("", "v1", "pods", "Pod", True, ("po",), ("status", "log")),
    Resource("", "v1", "events", "Event", True, ("ev",)),
    Resource("apps", "v1", "deployments", "Deployment", True, ("deploy",), ("status", "scale")),
    Resource("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), ("status", "scale")),
    Resource("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), ("status", "scale")),
    Resource("batch", "v1", "jobs", "Job", True, (), ("status",)),
    Resource("batch", "v1", "cronjobs", "CronJob", True, ("cj",), ("status",)),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("events.k8s.io", "v1", "events", "Event", True, ("ev",)),
    Resource("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    Resource("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    Resource("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    Resource("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
             verbs=("create",)),
)

# Object kinds whose objects pass through the validator although they have no REST collection.
SUBRESOURCE_KINDS = {"scale": ("autoscaling/v1", "Scale"), "token": ("authentication.k8s.io/v1", "TokenRequest")}

BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KEY = {r.key: r for r in RESOURCES}
BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def groups():
    """[(group, version, [Resource])] in discovery order, core group first."""
    out = {}
    for r in RESOURCES:
        out.setdefault((r.group, r.version), []).append(r)
    return [(g, v, rs) for (g, v), rs in out.items()]


def resource_list(group, version):
    """The APIResourceList of one group/version, subresources included, as the real server lists it."""
    items = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        items.append({
            "name": r.plural, "singularName": r.singular or r.kind.lower(), "namespaced": r.namespaced,
            "kind": r.kind, "verbs": list(r.verbs), **({"shortNames": list(r.short)} if r.short else {}),
        })
        for sub in r.subresources:
            kind, verbs = r.kind, ["get", "patch", "update"]
            if sub == "scale":
                items.append({"name": f"{r.plural}/scale", "singularName": "", "namespaced": True,
                              "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": verbs})
                continue
            if sub == "log":
                kind, verbs = "Pod", ["get"]
            if sub == "token":
                kind, verbs = "TokenRequest", ["create"]
                items.append({"name": f"{r.plural}/token", "singularName": "", "namespaced": True,
                              "group": "authentication.k8s.io", "version": "v1", "kind": kind, "verbs": verbs})
                continue
            items.append({"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced,
                          "kind": kind, "verbs": verbs})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": items}
