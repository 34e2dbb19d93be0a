"""Where a run's joules went: first contacts with each node against later calls, by link class.

With lazy discovery the coordinator learns what a node is only from its first reply, so every
first contact with a node on a cellular radio (LTE, 5G, 3G: a radio wake-up and its tail) is a
cost no selector can avoid without knowing the node beforehand. For each ledger given (or found
under a directory), prints total joules, the share spent on first contacts with cellular nodes,
on later calls to cellular nodes, and on first contacts overall.

    python simulations/first_contacts.py runs/e2a-final [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

CELLULAR = ("lte", "5g", "5g-mmwave", "3g")


def first_contacts(ledger: Path) -> dict:
    """Joules of one run's ledger split by first contact / later call and link class."""
    con = sqlite3.connect(ledger)
    try:
        rows = con.execute(
            "SELECT e.round, e.node_id, COALESCE(n.link, 'unknown'), SUM(e.joules) FROM energy e "
            "LEFT JOIN nodes n ON e.run_id=n.run_id AND e.node_id=n.node_id "
            "GROUP BY e.round, e.node_id ORDER BY e.round, e.node_id"
        ).fetchall()
    finally:
        con.close()
    seen: set[str] = set()
    out = {"total_j": 0.0, "first_cellular_j": 0.0, "later_cellular_j": 0.0, "first_all_j": 0.0}
    for _, node, link, joules in rows:
        out["total_j"] += joules
        cellular = link in CELLULAR
        if node not in seen:
            out["first_all_j"] += joules
            out["first_cellular_j"] += joules if cellular else 0.0
        elif cellular:
            out["later_cellular_j"] += joules
        seen.add(node)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", help="ledger.sqlite files or directories to search")
    p.add_argument("--json", default=None, help="write the figures as JSON here")
    a = p.parse_args(argv)
    ledgers: list[Path] = []
    for raw in a.paths:
        path = Path(raw)
        ledgers += sorted(path.rglob("ledger.sqlite")) if path.is_dir() else [path]
    if not ledgers:
        print("no ledger.sqlite found", file=sys.stderr)
        return 2
    doc = {}
    for led in ledgers:
        r = first_contacts(led)
        doc[str(led.parent)] = r
        t = max(r["total_j"], 1e-12)
        print(
            f"{str(led.parent):<70} {r['total_j']:8.1f} J  first contacts, cellular "
            f"{r['first_cellular_j'] / t:4.0%}  later calls, cellular "
            f"{r['later_cellular_j'] / t:4.0%}  first contacts, all {r['first_all_j'] / t:4.0%}"
        )
    if a.json:
        Path(a.json).write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
