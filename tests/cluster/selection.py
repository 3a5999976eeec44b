"""Label selectors (equality and set-based) and field selectors, as the API server parses them."""

import re


class SelectorError(Exception):
    pass


_SET_RE = re.compile(r"^\s*([^\s!=,()]+)\s+(in|notin)\s+\(([^)]*)\)\s*")
_EQ_RE = re.compile(r"^\s*([^\s!=,()]+)\s*(==|!=|=)\s*([^\s,()]*)\s*")
_EXISTS_RE = re.compile(r"^\s*(!?)([^\s!=,()]+)\s*")


def parse_labels(text):
    """-> [(key, op, values)]; op in =, !=, in, notin, exists, !exists."""
    reqs, rest = [], text or ""
    while rest.strip():
        m = _SET_RE.match(rest)
        if m:
            reqs.append((m.group(1), m.group(2), [v.strip() for v in m.group(3).split(",") if v.strip()]))
        else:
            m = _EQ_RE.match(rest)
            if m:
                op = "=" if m.group(2) in ("=", "==") else "!="
                reqs.append((m.group(1), op, [m.group(3)]))
            else:
                m = _EXISTS_RE.match(rest)
                if not m:
                    raise SelectorError(f"unable to parse requirement: {rest!r}")
                reqs.append((m.group(2), "!exists" if m.group(1) else "exists", []))
        rest = rest[m.end():]
        if rest.strip():
            if not rest.lstrip().startswith(","):
                raise SelectorError(f"found '{rest.strip()[0]}', expected: ',' or 'end of string'")
            rest = rest.lstrip()[1:]
    return reqs


def labels_match(reqs, labels):
    labels = labels or {}
    for key, op, values in reqs:
        have = key in labels
        val = labels.get(key)
        if op in ("=", "!="):
            op, values = ("in" if op == "=" else "notin"), values[:1]
        ok = {
            "in": have and val in values,
            "notin": not have or val not in values,
            "exists": have,
            "!exists": not have,
        }[op]
        if not ok:
            return False
    return True


def label_selector_from_object(sel):
    """A metav1.LabelSelector (matchLabels/matchExpressions) as requirements."""
    reqs = [(k, "=", [v]) for k, v in (sel or {}).get("matchLabels", {}).items()]
    for e in (sel or {}).get("matchExpressions", []) or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}[e["operator"]]
        reqs.append((e["key"], op, e.get("values") or []))
    return reqs


# Fields each resource accepts in a field selector (beyond metadata.name/namespace), as the real
# server's field label conversion functions allow; others are rejected with 400.
FIELD_LABELS = {
    "pods": {"spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
             "status.phase", "status.podIP", "status.nominatedNodeName", "spec.hostNetwork"},
    "events": {"involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
               "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
               "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type",
               "regarding.kind", "regarding.name", "regarding.namespace", "regarding.uid"},
    "secrets": {"type"},
    "jobs": {"status.successful"},
    "namespaces": {"status.phase"},
    "replicasets": {"status.replicas"},
}


def parse_fields(text, plural, kind, api_version):
    reqs = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        m = re.match(r"^([^!=]+)(==|!=|=)(.*)$", part.strip())
        if not m:
            raise SelectorError(f"invalid selector: '{part}'; can't understand '{part}'")
        key = m.group(1)
        if key not in ("metadata.name", "metadata.namespace") and key not in FIELD_LABELS.get(plural, ()):
            raise SelectorError(f'"{key}" is not a known field selector: only "metadata.name", "metadata.namespace"'
                                if plural not in FIELD_LABELS else
                                f'field label not supported: {key}')
        reqs.append((key, "!=" if m.group(2) == "!=" else "=", m.group(3)))
    return reqs


def _field(obj, path):
    cur = obj
    for p in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(p)
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return "" if cur is None else str(cur)


def fields_match(reqs, obj):
    for key, op, value in reqs:
        have = _field(obj, key)
        if (have == value) != (op == "="):
            return False
    return True
