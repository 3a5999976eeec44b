"""The OpenAPI v3 documents the clients read before writing: which PATCH operations accept the
`fieldValidation` query parameter (kubectl and helm then leave schema validation to the server, as
with a real 1.27+ API server). Schemas themselves are not served (see tests/e2e/README.md)."""

import resources


def _gv_path(group, version):
    return f"apis/{group}/{version}" if group else f"api/{version}"


def root():
    return {"paths": {_gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash=sts"}
                      for g, v, _ in resources.groups()}}


def group_version(path):
    for g, v, rs in resources.groups():
        if _gv_path(g, v) != path:
            continue
        paths = {}
        for r in rs:
            base = f"/{_gv_path(g, v)}/" + (f"namespaces/{{namespace}}/{r.plural}" if r.namespaced else r.plural)
            gvk = {"group": g, "version": v, "kind": r.kind}
            params = [{"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
                      for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
            paths[f"{base}/{{name}}"] = {"patch": {"operationId": f"patch{r.kind}",
                                                   "x-kubernetes-action": "patch",
                                                   "x-kubernetes-group-version-kind": gvk,
                                                   "parameters": params,
                                                   "responses": {"200": {"description": "OK"}}}}
        return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.34.0"}, "paths": paths,
                "components": {"schemas": {}}}
    return None
