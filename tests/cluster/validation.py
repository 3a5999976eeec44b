"""Schema validation of every create/update against the official OpenAPI-derived JSON schema of the
Kubernetes version under test (the `-strict` schemas shipped by kubernetes-validate), split the way the
real API server splits it: unknown fields are a decoding matter governed by `fieldValidation`
(Strict → 400 "strict decoding error", Warn → a Warning header, Ignore → dropped silently), wrong
types are a decoding error (400), missing required fields and unsupported enum values are 422 Invalid."""

import functools
import json
import pathlib
import re

import jsonschema
import kubernetes_validate
import referencing

SCHEMA_ROOT = pathlib.Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"


def schema_dir(version):
    """The newest shipped schema not newer than `version` (e.g. '1.34')."""
    want = tuple(int(x) for x in version.split(".")[:2])
    best = None
    for d in SCHEMA_ROOT.iterdir():
        m = re.match(r"^v(\d+)\.(\d+)\.\d+-local-strict$", d.name)
        if m and (int(m.group(1)), int(m.group(2))) <= want:
            if best is None or (int(m.group(1)), int(m.group(2))) > best[0]:
                best = ((int(m.group(1)), int(m.group(2))), d)
    if best is None:
        raise ValueError(f"no schema for Kubernetes {version}")
    return best[1]


@functools.lru_cache(maxsize=None)
def _registry(version):
    defs = json.loads((schema_dir(version) / "_definitions.json").read_text())
    return referencing.Resource.from_contents(defs) @ referencing.Registry()


@functools.lru_cache(maxsize=None)
def _validator(version, api_version, kind):
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = schema_dir(version) / f"{kind.lower()}-{group_version}.json"
    if not path.exists():
        return None
    schema = json.loads(path.read_text())
    return jsonschema.validators.Draft202012Validator(schema, registry=_registry(version))


def _field_path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


class Problems:
    """What the schema found: unknown fields, decode (type) errors, and 422 causes."""

    def __init__(self):
        self.unknown = []
        self.decode = []
        self.invalid = []  # (field, reason, message)


def check(version, obj):
    probs = Problems()
    validator = _validator(version, obj.get("apiVersion", ""), obj.get("kind", ""))
    if validator is None:
        probs.decode.append(f"no kind \"{obj.get('kind')}\" is registered for version \"{obj.get('apiVersion')}\"")
        return probs
    for err in validator.iter_errors(obj):
        _classify(err, probs)
    return probs


def _classify(err, probs):
    where = list(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = set(err.schema.get("properties", {}))
        for name in sorted(err.instance):
            if name not in allowed:
                probs.unknown.append(_field_path(where + [name]))
    elif err.validator in ("anyOf", "oneOf", "allOf") and err.context:
        # int-or-string and friends: report the most specific branch
        best = min(err.context, key=lambda e: len(list(e.schema_path)))
        _classify(best, probs)
    elif err.validator == "required":
        missing = re.search(r"'([^']+)' is a required property", err.message)
        name = missing.group(1) if missing else "?"
        probs.invalid.append((_field_path(where + [name]), "FieldValueRequired", "Required value"))
    elif err.validator == "enum":
        allowed = ", ".join(f'"{v}"' for v in err.validator_value if v is not None)
        probs.invalid.append((_field_path(where), "FieldValueNotSupported",
                              f"Unsupported value: {json.dumps(err.instance)}: supported values: {allowed}"))
    elif err.validator == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else \
            [t for t in err.validator_value if t != "null"][0]
        got = type(err.instance).__name__
        got = {"str": "string", "int": "number", "float": "number", "dict": "object", "list": "array",
               "bool": "bool"}.get(got, got)
        probs.decode.append(f"json: cannot unmarshal {got} into Go struct field {_field_path(where)} of type {want}")
    else:
        probs.invalid.append((_field_path(where), "FieldValueInvalid", f"Invalid value: {err.message}"))


def drop_unknown(obj, paths):
    """Removes the unknown fields (fieldValidation Ignore/Warn), as the server's decoder does."""
    for p in paths:
        tokens = re.findall(r"[^.\[\]]+|\[\d+\]", p)
        cur = obj
        for t in tokens[:-1]:
            cur = cur[int(t[1:-1])] if t.startswith("[") else cur.get(t)
            if cur is None:
                break
        else:
            if isinstance(cur, dict):
                cur.pop(tokens[-1], None)
