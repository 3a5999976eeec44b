#!/usr/bin/env python3
"""Starts the Kubernetes API double (and its controllers, and optionally the podman kubelet) on
127.0.0.1 and writes an admin kubeconfig; runs until SIGTERM.

Usage: cluster.py --dir DIR [--port N] [--k8s-version 1.34] [--kubelet | --scripted-kubelet]
Writes DIR/pki/*, DIR/admin.kubeconfig, DIR/port, and DIR/ready once serving; DIR/access.log
(one line per request) and DIR/audit.log (an audit.k8s.io/v1 Event per resource request).
"""

import argparse
import os
import shutil
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import controllers  # noqa: E402
import pki  # noqa: E402
from api import Api  # noqa: E402
from server import ApiServer  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--k8s-version", default="1.34")
    p.add_argument("--kubelet", action="store_true", help="run pods in podman containers")
    p.add_argument("--scripted-kubelet", action="store_true",
                   help="walk pods through the phases, logs and exit codes of DIR/kubelet-script.json")
    p.add_argument("--client-binary", default=shutil.which("kubectl"),
                   help="kubectl or helm: its embedded protobuf descriptors decode protobuf requests")
    args = p.parse_args()

    pki_dir = os.path.join(args.dir, "pki")
    pki.make_pki(pki_dir)
    with open(os.path.join(pki_dir, "ca.crt"), encoding="utf-8") as f:
        ca_pem = f.read()
    api = Api(args.k8s_version, ca_pem)
    log = open(os.path.join(args.dir, "access.log"), "a", encoding="utf-8")  # noqa: SIM115
    audit = open(os.path.join(args.dir, "audit.log"), "a", encoding="utf-8")  # noqa: SIM115
    server = ApiServer(api, pki_dir, args.port, log, args.client_binary, audit)
    port = server.server_port
    pki.write_kubeconfig(os.path.join(args.dir, "admin.kubeconfig"), f"https://127.0.0.1:{port}",
                         os.path.join(pki_dir, "ca.crt"), "admin",
                         cert=os.path.join(pki_dir, "admin.crt"), key=os.path.join(pki_dir, "admin.key"))
    ctrl = controllers.Controllers(api)
    kubelet = None
    if args.kubelet:
        import kubelet as kubelet_mod
        kubelet = kubelet_mod.Kubelet(api, server, args.dir, f"https://127.0.0.1:{port}")
        kubelet.start()
    elif args.scripted_kubelet:
        from scripted_kubelet import ScriptedKubelet
        kubelet = ScriptedKubelet(api, server, args.dir)
        kubelet.start()
    ctrl.start()
    stop = threading.Event()

    def on_signal(*_):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with open(os.path.join(args.dir, "port"), "w", encoding="utf-8") as f:
        f.write(str(port))
    with open(os.path.join(args.dir, "ready"), "w", encoding="utf-8") as f:
        f.write("ready\n")
    stop.wait()
    server.stopping.set()
    ctrl.stop()
    if kubelet:
        kubelet.stop()
    server.shutdown()


if __name__ == "__main__":
    main()
