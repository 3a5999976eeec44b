"""HTTPS transport of the Kubernetes API double: authentication (client certificates signed by the test
CA, ServiceAccount bearer tokens), RBAC, discovery, the REST verbs, watch and pod logs."""

import json
import os
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openapi
import protobuf
import rbac
import resources
from api import ApiError

VERSION_INFO = {"major": "1", "minor": "34", "gitVersion": "v1.34.0", "gitCommit": "sts-test-double",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24",
                "compiler": "gc", "platform": "linux/amd64"}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "sts-kube-apiserver-double"

    def log_message(self, fmt, *args):  # one line per request in the server's log
        if self.server.access_log:
            self.server.access_log.write(f"{self.command} {self.path} -> {fmt % args}\n")
            self.server.access_log.flush()

    def log_request(self, code="-", size="-"):
        pass  # _send logs the answer itself

    # ---- plumbing ------------------------------------------------------------------------------

    def _send(self, code, body, warnings=()):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for w in warnings:
            quoted = w.replace("\\", "\\\\").replace('"', '\\"')
            self.send_header("Warning", f'299 - "{quoted}"')
        self.send_header("Audit-Id", "sts")
        self.end_headers()
        self.wfile.write(data)
        self._code = code
        self.log_message("%d", code)

    def _error(self, err):
        self._send(err.code, err.status())

    def _body(self):
        self._body_read = True
        n = int(self.headers.get("Content-Length") or 0)
        self._request_body = self.rfile.read(n) if n else b""
        return self._request_body

    def _json_body(self):
        raw = self._body()
        if self.headers.get("Content-Type", "").startswith("application/vnd.kubernetes.protobuf"):
            try:
                return protobuf.decode(raw, self.server.proto_binary)
            except protobuf.DecodeError as e:
                raise ApiError(400, "BadRequest", f"error decoding protobuf body: {e}") from e
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            import yaml
            try:
                return yaml.safe_load(raw)
            except yaml.YAMLError as e:
                raise ApiError(400, "BadRequest", f"error decoding request body: {e}") from e

    def _start_stream(self, content_type="application/json"):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data):
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self):
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass

    # ---- authentication and authorisation ------------------------------------------------------

    def _identity(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.server.api.authenticate_token(auth[7:].strip())
        cert = self.connection.getpeercert()
        if cert:
            subject = dict(x[0] for x in cert.get("subject", ()))
            orgs = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "organizationName"]
            return subject.get("commonName", ""), orgs + ["system:authenticated"]
        return None

    def _authorize(self, user, groups, attrs, qualified=""):
        if not rbac.allowed(self.server.api.store, user, groups, attrs):
            details = {} if attrs.get("path") else {"name": attrs.get("name", ""), "group": attrs["group"],
                                                    "kind": attrs["resource"]}
            raise ApiError(403, "Forbidden", rbac.forbidden_message(user, attrs, qualified), details)

    # ---- routing -------------------------------------------------------------------------------

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        self._body_read = False
        try:
            who = self._identity()
            if who is None:
                self._body()
                raise ApiError(401, "Unauthorized", "Unauthorized")
            user, groups = who
            target = self._parse(url.path)
            if target is None:
                self._authorize(user, groups, {"verb": method.lower(), "path": url.path})
                return self._non_resource(url.path)
            res, namespace, name, sub = target
            verb = self._verb(method, name, sub, query)
            attrs = {"verb": verb, "group": res.group, "resource": res.plural, "subresource": sub or "",
                     "name": name or "", "namespace": namespace or ""}
            self._request_body, self._code = b"", None
            # a stream (watch, log follow) is audited once it is authorized, as the real server's
            # ResponseStarted stage; every other request once answered (ResponseComplete)
            streaming = verb == "watch" or (sub == "log" and query.get("follow") == "true")
            try:
                self._authorize(user, groups, attrs, res.qualified)
                if streaming:
                    self._code = 200
                    self._audit(user, attrs, res, url, "ResponseStarted")
                self._resource(method, verb, res, namespace, name, sub, query, user, groups)
            except ApiError as e:
                self._code = e.code
                raise
            finally:
                if not streaming or self._code != 200:
                    self._audit(user, attrs, res, url, "ResponseComplete")
        except ApiError as e:
            if not self._body_read:
                # A refused request's body is still on a kept-alive connection; read it so
                # it is not taken for the next request line.
                self._body()
            self._error(e)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as e:  # noqa: BLE001  a bug in the double answers 500 and is logged
            import traceback
            traceback.print_exc()
            self._error(ApiError(500, "InternalError", f"Internal error occurred: {e!r}"))

    def _audit(self, user, attrs, res, url, stage):
        """One audit.k8s.io/v1 Event (level Request) per resource request, as a JSON line in the
        server's audit log: who did what to which object, the answer's code, and the request
        body when it was JSON (an object created, the patch, the DeleteOptions)."""
        log = self.server.audit_log
        if log is None:
            return
        try:
            body = json.loads(self._request_body) if self._request_body else None
        except ValueError:
            body = None  # protobuf: the type is in the objectRef
        ref = {"resource": res.plural, "namespace": attrs["namespace"], "name": attrs["name"],
               "apiGroup": res.group, "subresource": attrs["subresource"]}
        event = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "stage": stage,
                 "verb": attrs["verb"],
                 "requestURI": url.path + (f"?{url.query}" if url.query else ""), "user": {"username": user},
                 "objectRef": {k: v for k, v in ref.items() if v}, "responseStatus": {"code": self._code},
                 **({"requestObject": body} if body is not None else {})}
        with self.server.audit_lock:
            log.write(json.dumps(event) + "\n")
            log.flush()

    @staticmethod
    def _verb(method, name, sub, query):
        if method == "GET":
            if name is None:
                return "watch" if query.get("watch") in ("true", "1") else "list"
            return "get"
        if method == "DELETE":
            return "delete" if name else "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]

    @staticmethod
    def _parse(path):
        """-> (Resource, namespace, name, subresource) or None for a non-resource path."""
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        if not rest:
            return None
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and (group, version, rest[2]) in resources.BY_PATH:
            namespace, rest = rest[1], rest[2:]
        res = resources.BY_PATH.get((group, version, rest[0]))
        if res is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub and sub not in res.subresources:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if res.namespaced and name is not None and namespace is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return res, namespace, name, sub

    # ---- non-resource paths: discovery, version, health ----------------------------------------

    def _non_resource(self, path):
        path = path.rstrip("/") or "/"
        if path in ("/healthz", "/livez", "/readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(data)
            return None
        if path == "/openapi/v3":
            return self._send(200, openapi.root())
        if path.startswith("/openapi/v3/"):
            doc = openapi.group_version(path[len("/openapi/v3/"):])
            if doc is not None:
                return self._send(200, doc)
        if path == "/version":
            return self._send(200, dict(VERSION_INFO, minor=self.server.api.version.split(".")[1],
                                        gitVersion=f"v{self.server.api.version}.0"))
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.server.server_port}"}]})
        if path == "/apis":
            groups = []
            for g, v, _ in resources.groups():
                if g:
                    gv = {"groupVersion": f"{g}/{v}", "version": v}
                    groups.append({"name": g, "versions": [gv], "preferredVersion": gv})
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        parts = path.strip("/").split("/")
        if parts == ["api", "v1"]:
            return self._send(200, resources.resource_list("", "v1"))
        if len(parts) == 3 and parts[0] == "apis":
            body = resources.resource_list(parts[1], parts[2])
            if body["resources"]:
                return self._send(200, body)
        if len(parts) == 2 and parts[0] == "apis":
            for g, v, _ in resources.groups():
                if g == parts[1]:
                    gv = {"groupVersion": f"{g}/{v}", "version": v}
                    return self._send(200, {"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv],
                                            "preferredVersion": gv})
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # ---- resources -----------------------------------------------------------------------------

    def _resource(self, method, verb, res, namespace, name, sub, query, user, groups):
        api = self.server.api
        fv = query.get("fieldValidation")
        dry = query.get("dryRun") == "All"
        warnings = []
        if sub == "log":
            return self._log(res, namespace, name, query)
        if sub == "token":
            if method != "POST":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                        "resource")
            return self._send(201, api.create_token(namespace, name, self._json_body()))
        if sub == "scale":
            if method == "GET":
                return self._send(200, api.get_scale(res, namespace, name))
            if method == "PUT":
                return self._send(200, api.update_scale(res, namespace, name, self._json_body(), fv, warnings))
            if method == "PATCH":
                return self._send(200, api.patch_scale(res, namespace, name, self._body(),
                                                       self.headers.get("Content-Type", ""), fv, warnings))
        if res.plural == "selfsubjectaccessreviews":
            return self._send(201, self._access_review(self._json_body(), user, groups))
        if verb == "watch":
            return self._watch(res, namespace, query)
        if verb == "list":
            return self._send(200, api.list(res, namespace, query.get("labelSelector", ""),
                                            query.get("fieldSelector", "")))
        if verb == "get":
            obj = api.get(res, namespace, name)
            return self._send(200, obj)
        if verb == "create":
            if name is not None:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested "
                                                        "resource")
            obj = api.create(res, namespace, self._json_body(), fv, warnings, dry)
            return self._send(201, obj, warnings)
        if verb == "update":
            obj = api.update(res, namespace, name, self._json_body(), fv, warnings, sub, dry)
            return self._send(200, obj, warnings)
        if verb == "patch":
            obj = api.patch(res, namespace, name, self._body(), self.headers.get("Content-Type", ""), fv,
                            warnings, sub, query.get("fieldManager"), query.get("force") == "true", dry)
            return self._send(200, obj, warnings)
        if verb == "delete":
            options = self._json_body() or {}
            if "propagationPolicy" in query:
                options["propagationPolicy"] = query["propagationPolicy"]
            if "gracePeriodSeconds" in query:
                options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
            return self._send(200, api.delete(res, namespace, name, options))
        if verb == "deletecollection":
            options = self._json_body() or {}
            if "propagationPolicy" in query:
                options["propagationPolicy"] = query["propagationPolicy"]
            listed = api.list(res, namespace, query.get("labelSelector", ""), query.get("fieldSelector", ""))
            for o in listed["items"]:
                try:
                    api.delete(res, o["metadata"].get("namespace"), o["metadata"]["name"], options)
                except ApiError:
                    pass
            return self._send(200, listed)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _access_review(self, review, user, groups):
        attrs = (review.get("spec") or {}).get("resourceAttributes")
        nra = (review.get("spec") or {}).get("nonResourceAttributes")
        if attrs:
            a = {"verb": attrs.get("verb", ""), "group": attrs.get("group", ""), "resource": attrs.get("resource", ""),
                 "subresource": attrs.get("subresource", ""), "name": attrs.get("name", ""),
                 "namespace": attrs.get("namespace", "")}
        else:
            a = {"verb": (nra or {}).get("verb", ""), "path": (nra or {}).get("path", "")}
        ok = rbac.allowed(self.server.api.store, user, groups, a)
        review["status"] = {"allowed": ok}
        review.setdefault("metadata", {})["creationTimestamp"] = None
        return review

    def _watch(self, res, namespace, query):
        api = self.server.api
        from selection import fields_match, labels_match, parse_fields, parse_labels
        lreqs = parse_labels(query.get("labelSelector", ""))
        freqs = parse_fields(query.get("fieldSelector", ""), res.plural, res.kind, res.api_version)
        timeout = float(query.get("timeoutSeconds") or 1800)
        deadline = time.monotonic() + timeout
        rv = query.get("resourceVersion", "")
        ns = namespace if res.namespaced else None
        self._start_stream()
        with api.store.lock:
            start = api.store.revision
            initial = []
            if rv in ("", "0") or query.get("sendInitialEvents") == "true":
                initial = [o for o in api.store.items(res.key, ns)]
            else:
                start = int(rv)
                oldest = api.store.history[0][0] if api.store.history else 0
                if start < oldest - 1:
                    self._chunk(json.dumps({"type": "ERROR", "object": ApiError(
                        410, "Expired", f"too old resource version: {start} ({oldest})").status()}).encode() + b"\n")
                    return self._end_stream()

        def matches(o):
            return labels_match(lreqs, o["metadata"].get("labels")) and fields_match(freqs, o)

        for o in initial:
            if matches(o):
                self._chunk(json.dumps({"type": "ADDED", "object": o}).encode() + b"\n")
        if query.get("sendInitialEvents") == "true":
            mark = {"kind": res.kind, "apiVersion": res.api_version, "metadata": {
                "resourceVersion": str(start), "annotations": {"k8s.io/initial-events-end": "true"}}}
            self._chunk(json.dumps({"type": "BOOKMARK", "object": mark}).encode() + b"\n")
        seen = start
        while time.monotonic() < deadline and not self.server.stopping.is_set():
            with api.store.changed:
                events = api.store.events_after(seen, res.key, ns)
                if not events:
                    api.store.changed.wait(timeout=min(1.0, max(0.0, deadline - time.monotonic())))
                    events = api.store.events_after(seen, res.key, ns)
            for rev, ev, o in events:
                seen = rev
                if matches(o):
                    self._chunk(json.dumps({"type": ev, "object": o}).encode() + b"\n")
        self._end_stream()
        return None

    def _log(self, res, namespace, name, query):
        api = self.server.api
        pod = api.get(res, namespace, name)
        names = [c["name"] for c in pod["spec"].get("containers", [])]
        all_names = [c["name"] for c in pod["spec"].get("initContainers", []) or []] + names
        container = query.get("container")
        if not container:
            if len(names) != 1:
                raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, choose one "
                                                  f"of: [{' '.join(names)}]" +
                               (f" or one of the init containers: [{' '.join(all_names[:-len(names)])}]"
                                if len(all_names) > len(names) else ""))
            container = names[0]
        if container not in all_names:
            raise ApiError(400, "BadRequest", f"container {container} is not valid for pod {name}")
        logs = self.server.logs
        path = logs(namespace, name, container) if logs else None
        if path is None or not os.path.exists(path):
            phase = pod.get("status", {}).get("phase", "Pending")
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                                              f"{'PodInitializing' if phase == 'Pending' else 'ContainerCreating'}")
        follow = query.get("follow") == "true"
        tail = int(query["tailLines"]) if query.get("tailLines") else None
        self._start_stream("text/plain")
        with open(path, "rb") as f:
            if tail is not None:
                lines = f.read().splitlines(keepends=True)[-tail:] if tail else []
                if lines:
                    self._chunk(b"".join(lines))
            while True:
                data = f.read(65536)
                if data:
                    self._chunk(data)
                    continue
                if not follow or self.server.stopping.is_set():
                    break
                if not self.server.container_running(namespace, name, container):
                    data = f.read()
                    if data:
                        self._chunk(data)
                    break
                time.sleep(0.1)
        self._end_stream()
        return None


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api, pki_dir, port=0, access_log=None, proto_binary=None, audit_log=None):
        super().__init__(("127.0.0.1", port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(pki_dir, "server.crt"), os.path.join(pki_dir, "server.key"))
        ctx.load_verify_locations(os.path.join(pki_dir, "ca.crt"))
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.tls = ctx
        self.api = api
        self.access_log = access_log
        self.audit_log = audit_log  # a file taking one audit Event per resource request (JSON lines)
        self.audit_lock = threading.Lock()
        self.stopping = threading.Event()
        self.proto_binary = proto_binary  # a client binary whose embedded descriptors decode protobuf
        self.logs = None  # (namespace, pod, container) -> log file path, set by the kubelet
        self.container_running = lambda ns, pod, c: False

    def finish_request(self, request, client_address):
        # The TLS handshake happens here, in the connection's own thread, so that a slow or failing
        # client never holds up accept() for the others.
        try:
            request = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        if sys.exc_info()[0] in (ssl.SSLEOFError, BrokenPipeError, ConnectionResetError):
            return
        super().handle_error(request, client_address)
