#!/usr/bin/env python3
"""Structural lint of the jobs image Dockerfile, on BuildKit's own parser.

The `dockerfile` package wraps moby/buildkit's Dockerfile parser (Go), so a file that passes
here is parsed the way `docker build` parses it. On top of the parse, this asserts the rules
the chart and the cluster depend on (docs/interfaces.md, issue 7):

  - every FROM names an earlier stage or an ARG whose default is a tagged image (not `latest`);
    a digest is optional (none can be looked up here) and reported when absent;
  - the final stage runs as a numeric non-root USER 65532:65532;
  - ENTRYPOINT and CMD are exec-form (JSON arrays), ENTRYPOINT is one of the binaries;
  - the OCI labels source, version and revision are set, version and revision from ARGs;
  - the three binaries are copied to /usr/local/bin/ and an exec-form smoke test runs one;
  - no ADD, no package manager in the runtime stage;
  - only known instructions, with arguments (the parser itself accepts any word);
  - the .dockerignore is an allow-list that lets in every path the Dockerfile's COPY . reads.

What this cannot catch: whether the base images exist or their digests match, whether
`cargo chef cook` really caches the dependency layer, whether the build succeeds; that needs a
registry, which this machine cannot reach (tests/images/run.sh builds and runs the same static
binaries outside Docker instead).

Usage: lint_dockerfile.py DOCKERFILE [DOCKERIGNORE]; prints one line per finding, exits 1 on any.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import dockerfile

BINARIES = ("stackgraph-backup", "retention-pruner", "es-snapshot-register", "backup-monitor")
REQUIRED_LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.version", "org.opencontainers.image.revision")
# The paths the builder reads from the context (Cargo workspace + the build script).
CONTEXT_NEEDS = ("Cargo.toml", "Cargo.lock", "jobs/", "images/build-static.sh", "images/rootfs/")
# BuildKit's parser only splits the file into instructions; it accepts any word as one.
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
    "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}


def image_ref_ok(ref: str) -> tuple[bool, str]:
    """(acceptable, note) for an image reference."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.partition(":")[2]
    if not tag and not digest:
        return False, f"{ref}: no tag and no digest"
    if tag == "latest":
        return False, f"{ref}: the `latest` tag moves without notice"
    if digest and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
        return False, f"{ref}: malformed digest"
    return True, "" if digest else f"{ref}: tag only, pin the digest at release (images/README.md)"


def lint(path: Path, ignore_path: Path | None) -> tuple[list[str], list[str]]:
    errors: list[str] = []
    notes: list[str] = []
    try:
        cmds = dockerfile.parse_file(str(path))
    except dockerfile.GoParseError as exc:
        return [f"parse error: {exc}"], notes

    global_args: dict[str, str] = {}
    stages: list[dict] = []
    for c in cmds:
        where = f"{path.name}:{c.start_line}"
        if c.cmd not in INSTRUCTIONS:
            errors.append(f"{where}: unknown instruction {c.cmd}")
            continue
        if not any(c.value) and c.cmd not in ("CMD", "ENTRYPOINT"):
            errors.append(f"{where}: {c.cmd} without arguments")
            continue
        if c.cmd in ("COPY", "ADD") and len(c.value) < 2:
            errors.append(f"{where}: {c.cmd} needs a source and a destination")
        if c.cmd == "FROM":
            value = list(c.value)
            if len(value) not in (1, 3) or (len(value) == 3 and value[1].upper() != "AS"):
                errors.append(f"{where}: FROM IMAGE [AS NAME] expected")
                continue
            ref = value[0]
            alias = value[2].lower() if len(value) >= 3 and value[1].upper() == "AS" else None
            known = {s["alias"] for s in stages if s["alias"]}
            m = re.fullmatch(r"\$\{?(\w+)\}?", ref)
            if m and global_args.get(m.group(1), "").lower() in known:
                pass  # an ARG that selects an earlier stage (ARTIFACTS=builder|prebuilt)
            elif ref.lower() == "scratch":
                pass  # the empty base: nothing is pulled, nothing to pin
            elif ref.lower() not in known:
                if m and m.group(1) not in global_args:
                    errors.append(f"{where}: FROM {ref}: ARG {m.group(1)} has no default before the first FROM")
                else:
                    ok, note = image_ref_ok(global_args[m.group(1)] if m else ref)
                    if note:
                        (notes if ok else errors).append(f"{where}: {note}")
            stages.append({"alias": alias, "cmds": [], "args": set()})
            continue
        if not stages:
            if c.cmd == "ARG":
                for item in c.value:
                    key, _, default = item.partition("=")
                    global_args[key] = default.strip('"')
            else:
                errors.append(f"{where}: {c.cmd} before the first FROM")
            continue
        stages[-1]["cmds"].append((c, where))
        if c.cmd == "ARG":
            stages[-1]["args"].update(item.partition("=")[0] for item in c.value)
        if c.cmd == "ADD":
            errors.append(f"{where}: ADD (use COPY)")

    if not stages:
        return errors + ["no FROM"], notes
    final = stages[-1]
    final_cmds = final["cmds"]

    def by(name: str) -> list:
        return [(c, w) for c, w in final_cmds if c.cmd == name]

    users = by("USER")
    if not users:
        errors.append("final stage: no USER (the image would run as root)")
    else:
        c, w = users[-1]
        user = c.value[0]
        if not re.fullmatch(r"[0-9]+:[0-9]+", user):
            errors.append(f"{w}: USER {user}: must be numeric uid:gid (kubelet runAsNonRoot)")
        elif user != "65532:65532":
            errors.append(f"{w}: USER {user}: docs/interfaces.md says 65532:65532")

    for name in ("ENTRYPOINT", "CMD"):
        found = by(name)
        if not found:
            errors.append(f"final stage: no {name}")
            continue
        c, w = found[-1]
        if not c.json:
            errors.append(f"{w}: {name} is shell-form; use a JSON array")
        if name == "ENTRYPOINT" and c.json and c.value[0] not in {f"/usr/local/bin/{b}" for b in BINARIES}:
            errors.append(f"{w}: ENTRYPOINT {c.value[0]} is none of the job binaries")

    labels: dict[str, str] = {}
    for c, _ in by("LABEL"):
        values = list(c.value)
        for key, value in zip(values[0::2], values[1::2]):
            labels[key] = value.strip('"')
    for key in REQUIRED_LABELS:
        if key not in labels:
            errors.append(f"final stage: LABEL {key} missing")
    for key, arg in (("org.opencontainers.image.version", "VERSION"), ("org.opencontainers.image.revision", "REVISION")):
        if key in labels and f"${{{arg}}}" not in labels[key] and f"${arg}" not in labels[key]:
            errors.append(f"final stage: LABEL {key} should come from ARG {arg}")
        if arg not in final["args"]:
            errors.append(f"final stage: no ARG {arg}")

    copies = by("COPY")
    dests = [c.value[-1] for c, _ in copies]
    if not any(d.rstrip("/") == "/usr/local/bin" or d.startswith("/usr/local/bin/") for d in dests):
        errors.append("final stage: nothing is copied to /usr/local/bin/")
    smoke = [(c, w) for c, w in by("RUN") if c.json and "--version" in c.value]
    if not smoke:
        errors.append("final stage: no exec-form RUN [BINARY, --version] smoke test")
    for c, w in by("RUN"):
        if re.search(r"\b(apt-get|apk|yum|dnf|microdnf)\b", " ".join(c.value)):
            errors.append(f"{w}: package manager in the runtime stage")

    build_runs = [" ".join(c.value) for stage in stages[:-1] for c, _ in stage["cmds"] if c.cmd == "RUN"]
    if not any("images/build-static.sh" in run for run in build_runs):
        errors.append("no build stage runs images/build-static.sh (the tested static build)")

    if ignore_path is not None:
        errors += lint_dockerignore(ignore_path)
    return errors, notes


def lint_dockerignore(path: Path) -> list[str]:
    if not path.is_file():
        return [f"{path}: missing"]
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    errors = []
    if not lines or lines[0] != "*":
        errors.append(f"{path.name}: should start with `*` (an allow-list keeps .git, target/, .tools/ and tests out)")
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    for need in CONTEXT_NEEDS:
        if need.rstrip("/") not in allowed:
            errors.append(f"{path.name}: {need} is needed by the build but not let in")
    root = path.parent
    for entry in allowed:
        if not (root / entry).exists():
            errors.append(f"{path.name}: !{entry} names a path that does not exist")
    if not any(re.fullmatch(r"(\*\*/)?target/?", ln) for ln in lines):
        errors.append(f"{path.name}: target/ inside an allowed folder is not excluded")
    return errors


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    errors, notes = lint(Path(argv[1]), Path(argv[2]) if len(argv) == 3 else None)
    for note in notes:
        print(f"note: {note}")
    for error in errors:
        print(f"error: {error}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
