#!/usr/bin/env python3
"""Checks deploy/grafana/ringside.json: it parses, has the `datasource` and
`region` variables, every panel and query uses `${datasource}`, panel ids are
unique, and every PromQL expression is valid (each one, with the Grafana
variables filled in, becomes a recording rule in a throwaway file that
`promtool check rules` must accept).

    python3 deploy/grafana/check-dashboard.py [path/to/ringside.json]
"""

import json
import pathlib
import subprocess
import sys
import tempfile

# Grafana variables -> values PromQL accepts.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "1m",
    "$__range": "1h",
    "${region}": ".*",
    "$region": ".*",
}


def fail(why):
    print(f"FAILED: {why}", file=sys.stderr)
    sys.exit(1)


def main():
    path = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else
                        pathlib.Path(__file__).with_name("ringside.json"))
    dash = json.loads(path.read_text())

    variables = {v["name"]: v for v in dash["templating"]["list"]}
    if variables.get("datasource", {}).get("type") != "datasource":
        fail("no `datasource` variable")
    region = variables.get("region", {})
    if "label_values(ringside_relay_connections, region)" not in json.dumps(region.get("query")):
        fail("no `region` variable from label_values(ringside_relay_connections, region)")

    exprs, ids = [], set()
    for panel in dash["panels"]:
        if panel["id"] in ids:
            fail(f"duplicate panel id {panel['id']}")
        ids.add(panel["id"])
        if panel["type"] == "row":
            continue
        if panel.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"panel {panel['title']!r} does not use ${{datasource}}")
        for target in panel.get("targets", []):
            if target.get("datasource", {}).get("uid") != "${datasource}":
                fail(f"a query of {panel['title']!r} does not use ${{datasource}}")
            exprs.append((panel["title"], target["expr"]))
    if not exprs:
        fail("no queries")

    rules = []
    for i, (title, expr) in enumerate(exprs):
        for var, value in VARIABLES.items():
            expr = expr.replace(var, value)
        if "$" in expr:
            fail(f"unknown variable in {title!r}: {expr}")
        rules.append({"record": f"dashboard:check_{i}", "expr": expr})
    with tempfile.TemporaryDirectory() as tmp:
        file = pathlib.Path(tmp) / "dashboard-exprs.yml"
        # JSON is YAML: no YAML library needed.
        file.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}, indent=2))
        done = subprocess.run(["promtool", "check", "rules", str(file)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            fail("promtool rejected an expression (numbers are query indexes)")
    print(f"{path}: {len(ids)} panels, {len(exprs)} PromQL expressions, all valid")


if __name__ == "__main__":
    main()
