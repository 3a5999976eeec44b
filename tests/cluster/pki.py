"""Certificates and kubeconfigs for the Kubernetes API double, made by the test with openssl.

A CA the test owns signs the server certificate (SAN 127.0.0.1, localhost) and the admin client
certificate (O=system:masters, as kubeadm's admin.conf); clients trust only that CA.
"""

import os
import subprocess


def _openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory):
    """Creates ca.crt, server.{crt,key}, admin.{crt,key} in `directory` (once)."""
    os.makedirs(directory, exist_ok=True)
    if os.path.exists(os.path.join(directory, "admin.crt")):
        return
    ext = os.path.join(directory, "server.ext")
    with open(ext, "w", encoding="utf-8") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
                "extendedKeyUsage=serverAuth\n")
    client_ext = os.path.join(directory, "client.ext")
    with open(client_ext, "w", encoding="utf-8") as f:
        f.write("extendedKeyUsage=clientAuth\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "2", "-subj", "/CN=sts-test-kubernetes-ca", cwd=directory)
    for name, subject, extfile in (("server", "/CN=kube-apiserver", ext),
                                   ("admin", "/O=system:masters/CN=kubernetes-admin", client_ext)):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", subject, cwd=directory)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", extfile, cwd=directory)


def write_kubeconfig(path, server, ca, user, namespace="default", cert=None, key=None, token=None):
    """Writes a kubeconfig with one cluster/user/context named `sts-test`."""
    if token is not None:
        cred = f"    token: {token}\n"
    else:
        cred = f"    client-certificate: {cert}\n    client-key: {key}\n"
    text = (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: sts-test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n"
        f"users:\n- name: {user}\n  user:\n{cred}"
        f"contexts:\n- name: sts-test\n  context:\n    cluster: sts-test\n    user: {user}\n"
        f"    namespace: {namespace}\n"
        "current-context: sts-test\n"
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)
