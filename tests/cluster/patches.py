"""The patch types kubectl and helm send: JSON merge (RFC 7386), JSON patch (RFC 6902) and
strategic merge (lists merged by the merge keys of the Kubernetes types the product uses)."""

import copy


class PatchError(Exception):
    pass


def merge_patch(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc, parts):
    for p in parts:
        if isinstance(doc, list):
            doc = doc[int(p)]
        elif isinstance(doc, dict):
            if p not in doc:
                raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
            doc = doc[p]
        else:
            raise PatchError(f"doc is missing path: /{'/'.join(parts)}")
    return doc


def json_patch(doc, ops):
    doc = copy.deepcopy(doc)
    if not isinstance(ops, list):
        raise PatchError("json patch must be a list of operations")
    for op in ops:
        kind, parts = op.get("op"), _pointer(op.get("path", ""))
        try:
            if kind == "test":
                if _walk(doc, parts) != op.get("value"):
                    raise PatchError(f"testing value /{'/'.join(parts)} failed")
                continue
            if kind in ("move", "copy"):
                src = _pointer(op["from"])
                value = copy.deepcopy(_walk(doc, src))
                if kind == "move":
                    parent = _walk(doc, src[:-1])
                    parent.pop(int(src[-1]) if isinstance(parent, list) else src[-1])
                kind, op = "add", {"value": value}
            parent = _walk(doc, parts[:-1])
            last = parts[-1] if parts else None
            if kind == "add":
                if isinstance(parent, list):
                    parent.insert(len(parent) if last == "-" else int(last), copy.deepcopy(op["value"]))
                else:
                    parent[last] = copy.deepcopy(op["value"])
            elif kind == "replace":
                if isinstance(parent, list):
                    parent[int(last)] = copy.deepcopy(op["value"])
                else:
                    if last not in parent:
                        raise PatchError(f"replace operation does not apply: doc is missing key: /{'/'.join(parts)}")
                    parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                if isinstance(parent, list):
                    parent.pop(int(last))
                else:
                    if last not in parent:
                        raise PatchError(f"remove operation does not apply: doc is missing path: /{'/'.join(parts)}")
                    del parent[last]
            else:
                raise PatchError(f"Unexpected kind: {kind}")
        except (IndexError, ValueError, KeyError, TypeError) as e:
            raise PatchError(f"json patch {kind} /{'/'.join(parts)}: {e}") from e
    return doc


# patchMergeKey of the list fields in the core/apps/batch/rbac types; lists not named here are atomic
# (replaced whole), as in the Go types' struct tags.
MERGE_KEYS = {
    "containers": "name", "initContainers": "name", "ephemeralContainers": "name", "env": "name",
    "volumes": "name", "volumeMounts": "mountPath", "volumeDevices": "devicePath",
    "imagePullSecrets": "name", "ownerReferences": "uid", "conditions": "type",
    "hostAliases": "ip", "topologySpreadConstraints": "topologyKey", "resourceClaims": "name",
}
# `ports` merges by containerPort in containers, by port in Services.
PORT_KEYS = ("containerPort", "port")
# primitive lists whose elements are merged as sets
SET_LISTS = {"finalizers"}


def _merge_key(name, items):
    if name == "ports":
        for k in PORT_KEYS:
            if all(isinstance(i, dict) and k in i for i in items):
                return k
        return None
    return MERGE_KEYS.get(name)


def strategic_merge(target, patch):
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k in ("$retainKeys", "$patch"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            name = k.split("/", 1)[1]
            out[name] = [i for i in out.get(name, []) if i not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and isinstance(out.get(k), list):
            out[k] = _merge_list(k, out[k], v)
        elif isinstance(v, dict):
            merged = strategic_merge(out.get(k), v)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        else:
            out[k] = copy.deepcopy(v)
    if retain is not None:
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _merge_list(name, current, patch):
    if name in SET_LISTS:
        return current + [i for i in patch if i not in current]
    key = _merge_key(name, current + patch)
    if key is None:
        if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
            return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
        return copy.deepcopy(patch)
    out = [copy.deepcopy(i) for i in current]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list {name} merges by {key}: elements must be objects")
        if item.get("$patch") == "replace":
            return [copy.deepcopy(i) for i in patch if i is not item]
        idx = next((n for n, c in enumerate(out) if c.get(key) == item.get(key)), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
            continue
        if idx is None:
            out.append(strategic_merge({}, item))
        else:
            out[idx] = strategic_merge(out[idx], item)
    return out
