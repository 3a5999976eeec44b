"""A read-only Kubernetes API endpoint for `helm template --dry-run=server`, so the chart's `lookup`
calls meet objects that exist: discovery documents for the kinds the chart looks up or renders,
GET of single objects by path, and lists (empty unless objects were put there). Anything else is
answered 404 (or 405 for a write) and recorded in `unexpected`, which the tests assert is empty.

This is not the cluster double (that one enforces the API); it stands in for the one question
Helm asks here: "does this object exist, and what does it hold?"
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESOURCES = {
    "v1": [("secrets", "Secret"), ("persistentvolumeclaims", "PersistentVolumeClaim"), ("services", "Service"),
           ("pods", "Pod"), ("configmaps", "ConfigMap"), ("namespaces", "Namespace")],
    "apps/v1": [("deployments", "Deployment")],
    "batch/v1": [("jobs", "Job"), ("cronjobs", "CronJob")],
}


def _resource_list(group_version):
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version,
            "resources": [{"name": plural, "singularName": kind.lower(), "namespaced": plural != "namespaces",
                           "kind": kind, "verbs": ["get", "list"]} for plural, kind in RESOURCES[group_version]]}


def _discovery():
    groups = [{"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
               "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]}}
              for gv in RESOURCES if "/" in gv]
    docs = {"/version": {"major": "1", "minor": "31", "gitVersion": "v1.31.0", "platform": "linux/amd64"},
            "/api": {"kind": "APIVersions", "versions": ["v1"],
                     "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
            "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups},
            "/api/v1": _resource_list("v1")}
    for gv in RESOURCES:
        if "/" in gv:
            docs[f"/apis/{gv}"] = _resource_list(gv)
    return docs


def object_path(obj):
    api_version, kind = obj["apiVersion"], obj["kind"]
    plural = next(p for p, k in RESOURCES[api_version] if k == kind)
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{obj['metadata']['namespace']}/{plural}/{obj['metadata']['name']}"


class ApiServerStub:
    """Serves `objects` (full Kubernetes objects with metadata.namespace) on 127.0.0.1."""

    def __init__(self, objects=()):
        self.objects = {object_path(o): o for o in objects}
        self.requests = []
        self.unexpected = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, code, body):
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                path = self.path.split("?")[0]
                stub.requests.append(path)
                docs = _discovery()
                if path in docs:
                    return self._send(200, docs[path])
                if path in stub.objects:
                    return self._send(200, stub.objects[path])
                parts = path.strip("/").split("/")
                base = 2 if parts[0] == "api" else 3  # /api/v1 or /apis/<group>/<version>
                if len(parts) >= base + 3 and parts[base] == "namespaces":
                    if len(parts) == base + 3:  # a list
                        items = [o for p, o in stub.objects.items() if p.startswith(path.rstrip("/") + "/")]
                        return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})
                    if len(parts) == base + 4:  # one object that does not exist
                        return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                                "reason": "NotFound", "code": 404, "message": f"{path} not found"})
                stub.unexpected.append(("GET", self.path))
                return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                        "reason": "NotFound", "code": 404})

            def _refuse(self):
                stub.unexpected.append((self.command, self.path))
                self._send(405, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 405})

            do_POST = do_PUT = do_PATCH = do_DELETE = _refuse

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path):
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "stub",
            "clusters": [{"name": "stub", "cluster": {"server": f"http://127.0.0.1:{self.port}"}}],
            "users": [{"name": "stub", "user": {"token": "stub"}}],
            "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub", "namespace": "ns1"}}]}))
        path.chmod(0o600)
        return path
