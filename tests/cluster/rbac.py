"""RBAC authorisation as the real RBAC authoriser evaluates it: RoleBindings in the request's namespace and
ClusterRoleBindings, their Role/ClusterRole rules (apiGroups, resources incl. `resource/subresource`,
resourceNames, verbs, nonResourceURLs, `*`), subjects by User, Group and ServiceAccount."""

# What every authenticated user may do without a binding (the bootstrap ClusterRoles system:discovery,
# system:basic-user and system:public-info-viewer).
PUBLIC_PATHS = ("/api", "/api/*", "/apis", "/apis/*", "/version", "/version/", "/openapi", "/openapi/*",
                "/healthz", "/livez", "/readyz")
SELF_REVIEWS = {("authorization.k8s.io", "selfsubjectaccessreviews"),
                ("authorization.k8s.io", "selfsubjectrulesreviews"),
                ("authentication.k8s.io", "selfsubjectreviews")}


def _subject_matches(subject, user, groups, namespace_of_binding):
    kind = subject.get("kind")
    if kind == "User":
        return subject.get("name") == user
    if kind == "Group":
        return subject.get("name") in groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or namespace_of_binding
        return user == f"system:serviceaccount:{ns}:{subject.get('name')}"
    return False


def _rule_allows(rule, attrs):
    verbs = rule.get("verbs") or []
    if "*" not in verbs and attrs["verb"] not in verbs:
        return False
    if attrs.get("path") is not None:
        for url in rule.get("nonResourceURLs") or []:
            if url == attrs["path"] or url == "*" or (url.endswith("*") and attrs["path"].startswith(url[:-1])):
                return True
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and attrs["group"] not in groups:
        return False
    resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
    resources = rule.get("resources") or []
    ok = any(r in ("*", resource) or (r == f"*/{attrs.get('subresource')}" and attrs.get("subresource"))
             or (r.endswith("/*") and r[:-2] == attrs["resource"] and attrs.get("subresource"))
             for r in resources)
    if not ok:
        return False
    names = rule.get("resourceNames") or []
    return not names or attrs.get("name") in names


def allowed(store, user, groups, attrs):
    """True when a binding grants `attrs` (verb, group, resource, subresource, name, namespace | path)."""
    if "system:masters" in groups:
        return True
    if attrs.get("path") is not None:
        if any(attrs["path"] == p or (p.endswith("*") and attrs["path"].startswith(p[:-1])) for p in PUBLIC_PATHS):
            return True
    elif (attrs["group"], attrs["resource"]) in SELF_REVIEWS and attrs["verb"] == "create":
        return True
    bindings = []
    for crb in store.items(("rbac.authorization.k8s.io", "clusterrolebindings"), None):
        bindings.append((crb, None))
    if attrs.get("namespace"):
        for rb in store.items(("rbac.authorization.k8s.io", "rolebindings"), attrs["namespace"]):
            bindings.append((rb, attrs["namespace"]))
    for binding, ns in bindings:
        if not any(_subject_matches(s, user, groups, ns) for s in binding.get("subjects") or []):
            continue
        ref = binding.get("roleRef") or {}
        if ref.get("kind") == "ClusterRole":
            role = store.peek(("rbac.authorization.k8s.io", "clusterroles"), None, ref.get("name"))
        else:
            role = store.peek(("rbac.authorization.k8s.io", "roles"), ns, ref.get("name")) if ns else None
        if role and any(_rule_allows(r, attrs) for r in role.get("rules") or []):
            return True
    return False


def forbidden_message(user, attrs, qualified):
    """The real RBAC denial text (k8s.io/apiserver ForbiddenStatusError + authorizer reason)."""
    if attrs.get("path") is not None:
        return f'forbidden: User "{user}" cannot {attrs["verb"]} path "{attrs["path"]}"'
    resource = attrs["resource"] + (f"/{attrs['subresource']}" if attrs.get("subresource") else "")
    who = f'{qualified} "{attrs["name"]}"' if attrs.get("name") else qualified
    scope = f'in the namespace "{attrs["namespace"]}"' if attrs.get("namespace") else "at the cluster scope"
    return (f'{who} is forbidden: User "{user}" cannot {attrs["verb"]} resource "{resource}" '
            f'in API group "{attrs["group"]}" {scope}')
