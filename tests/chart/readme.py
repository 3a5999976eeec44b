"""The values table of chart/README.md, generated from the `# --` comments of chart/values.yaml.

Usage: python readme.py check|write CHART_DIR

Rules (checked by `check`, which exits 1 with the offending keys):
- every key of values.yaml has a `# --` comment right above it, except the children of a key
  documented as a whole (a map whose direct children carry no `# --` comment at all);
- the table between the markers in README.md is exactly what this script generates.
"""

import json
import re
import sys
from pathlib import Path

import yaml

START = "<!-- values-table:start -->"
END = "<!-- values-table:end -->"
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")


def parse(values_text):
    """Return [(path, description or None, has_doc_children)] in file order."""
    rows = []
    stack = []  # [(indent, key)]
    doc = []
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            doc = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and doc:
            doc.append(stripped[1:].strip())
            continue
        match = KEY_LINE.match(line)
        if not match:
            if stripped and not stripped.startswith("#"):
                doc = []
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, match.group("key")))
        rows.append((".".join(k for _, k in stack), " ".join(doc) if doc else None))
        doc = []
    return rows


def lookup(values, path):
    node = values
    for part in path.split("."):
        node = node[part]
    return node


def documented_rows(values_text):
    """(rows, problems): the documented keys, and the keys that lack a `# --` comment."""
    rows = parse(values_text)
    documented = {p for p, d in rows if d is not None}
    problems = []
    table = []
    for path, desc in rows:
        parent = path.rpartition(".")[0]
        if desc is not None:
            table.append((path, desc))
            continue
        # Undocumented: allowed only inside a key documented as a whole, i.e. when no sibling
        # (a direct child of the same parent) is documented and some ancestor is documented.
        siblings = [p for p, _ in rows if p.rpartition(".")[0] == parent]
        ancestors = [a for a in documented if path.startswith(a + ".")]
        if not ancestors or any(s in documented for s in siblings):
            problems.append(path)
    # A documented map with documented children is a section; show only its leaves and sections.
    return table, problems


def render(values_text):
    values = yaml.safe_load(values_text)
    table, problems = documented_rows(values_text)
    documented = {p for p, _ in table}
    lines = ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for path, desc in table:
        value = lookup(values, path)
        is_section = isinstance(value, dict) and any(p.startswith(path + ".") for p in documented)
        if is_section:
            kind, default = "section", ""
        else:
            kind = type(value).__name__ if value is not None else "null"
            kind = {"str": "string", "int": "int", "bool": "bool", "dict": "object", "list": "list", "float": "number"}.get(kind, kind)
            default = "`" + json.dumps(value).replace("|", "\\|") + "`"
        text = desc.replace("|", "\\|")
        lines.append(f"| `{path}` | {kind} | {default} | {text} |")
    return "\n".join(lines) + "\n", problems


def main(argv):
    if len(argv) != 3 or argv[1] not in ("check", "write"):
        print(__doc__, file=sys.stderr)
        return 2
    chart = Path(argv[2])
    table, problems = render((chart / "values.yaml").read_text())
    readme_path = chart / "README.md"
    readme = readme_path.read_text()
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    wanted = f"{head}{START}\n{table}{END}{tail}"
    if argv[1] == "write":
        readme_path.write_text(wanted)
    status = 0
    if problems:
        print("values.yaml keys without a `# --` comment: " + ", ".join(problems), file=sys.stderr)
        status = 1
    if argv[1] == "check" and readme != wanted:
        print("chart/README.md values table is stale: run python tests/chart/readme.py write chart", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
