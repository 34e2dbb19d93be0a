"""Validation: the energy model against published measurements, case by case.

Each case (``validation_cases.py``) holds a published setup and the figure measured under it,
with its source; the model's figure for the same setup comes through the adapter
(``validation_model.py``), and the error is ``rel_error = modeled / measured - 1``.

A case whose source is the same publication as a constant it depends on is **fitted** (the
constant was derived from that measurement, so agreeing with it proves nothing): it is printed
and written, marked so, and left out of the summary statistics. Fitting is decided at run time
from the ``sources`` tables of ``fedenergy/data/*.toml``: a case names the catalog entries it
uses and its publication has identifying strings; if one of those strings occurs in the source
text of any constant of those entries, the case is fitted. A constant re-derived later from a
validation source therefore turns its cases into fitted ones by itself.

Pure model evaluation: no Flower, no training; well under a second.

    python simulations/validate.py [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

SIM = Path(__file__).resolve().parent
for p in (SIM.parent, SIM):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from validation_cases import CASES, KINDS, REFERENCES, SOURCE_KEYS, Case  # noqa: E402
from validation_model import constant, constant_sources  # noqa: E402


def fitted_by(case: Case) -> list[str]:
    """``table:entry.field`` of every constant whose source names the case's publication."""
    keys = SOURCE_KEYS[case.ref]
    hits = []
    for table, entry in case.uses:
        for field, text in sorted(constant_sources(table, entry).items()):
            if any(k in str(text).lower() for k in keys):
                hits.append(f"{table}:{entry}.{field}")
    return hits


def _explain(case: Case) -> str:
    """The case's note with the current value and source of each constant it rests on."""
    parts = []
    for ref in case.constants:
        value, source = constant(ref)
        short = source if len(source) <= 90 else source[:87] + "..."
        parts.append(f"{ref} = {value} ({short})")
    return "; ".join(parts) + f". Why: {case.note}"


def evaluate(case: Case) -> dict:
    """One case as a JSON-ready dict (``rel_error`` = modeled / measured - 1)."""
    modeled = float(case.model())
    hits = fitted_by(case)
    rel = modeled / case.measured - 1.0
    return {
        "case": case.case,
        "kind": case.kind,
        "source": REFERENCES[case.ref],
        "where": case.where,
        "setup": case.setup,
        "measured": case.measured,
        "modeled": modeled,
        "unit": case.unit,
        "rel_error": rel,
        "fitted": bool(hits),
        "fitted_by": hits,
        "within_2x": 0.5 <= modeled / case.measured <= 2.0,
        "constants": list(case.constants),
        "note": _explain(case),
    }


def run_cases(cases: tuple[Case, ...] = CASES) -> list[dict]:
    """Every case, evaluated."""
    return [evaluate(c) for c in cases]


def summarize(rows: list[dict]) -> dict:
    """Statistics over the validating (not fitted) cases."""
    val = [r for r in rows if not r["fitted"]]
    errs = [abs(r["rel_error"]) for r in val]
    factors = [max(r["modeled"] / r["measured"], r["measured"] / r["modeled"]) for r in val]
    return {
        "validating": len(val),
        "fitted": len(rows) - len(val),
        "median_abs_error": statistics.median(errs) if errs else float("nan"),
        "within_2x": sum(r["within_2x"] for r in val),
        "within_20pct": sum(e <= 0.20 for e in errs),
        "worst_factor": max(factors) if factors else float("nan"),
    }


def summary_line(s: dict) -> str:
    """The one machine-readable summary line the suite prints."""
    return (
        f"summary: validating={s['validating']} fitted={s['fitted']} "
        f"median_abs_error={s['median_abs_error'] * 100:.1f}% "
        f"within_2x={s['within_2x']}/{s['validating']} "
        f"within_20pct={s['within_20pct']}/{s['validating']} "
        f"worst_factor={s['worst_factor']:.2f}x"
    )


def _num(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def render(rows: list[dict]) -> str:
    """The printed report: table, sources, setups, misses, summary."""
    w = max(len(r["case"]) for r in rows)
    refs = list(dict.fromkeys(r["source"] for r in rows))
    out = [
        f"{'#':>2}  {'case':<{w}}  {'measured':>9}  {'modeled':>9}  {'unit':<6}  "
        f"{'error':>7}  {'ref':>3}  fitted",
    ]
    for i, r in enumerate(rows, 1):
        out.append(
            f"{i:>2}  {r['case']:<{w}}  {_num(r['measured']):>9}  {_num(r['modeled']):>9}  "
            f"{r['unit']:<6}  {r['rel_error'] * 100:>+6.0f}%  [{refs.index(r['source']) + 1}]  "
            f"{'FITTED' if r['fitted'] else '-'}"
        )
    out.append("\nsources:")
    out += [f"  [{i}] {ref}" for i, ref in enumerate(refs, 1)]
    out.append("\nsetups:")
    for i, r in enumerate(rows, 1):
        out.append(f"  {i:>2}. {r['case']}: {r['setup']} ({r['where']})")
    out.append("\ncoverage (validating cases per kind):")
    for kind, label in KINDS.items():
        n = sum(1 for r in rows if r["kind"] == kind and not r["fitted"])
        nf = sum(1 for r in rows if r["kind"] == kind and r["fitted"])
        gap = "" if n else "  GAP: no published figure we could read and model"
        out.append(f"  {kind:<13} {n:>2} (+{nf} fitted)  {label}{gap}")
    out.append("\nfitted (not counted):")
    out += [f"  {r['case']}: {', '.join(r['fitted_by'])}" for r in rows if r["fitted"]]
    out.append("\nmisses (|error| > 20 %; the constant and why):")
    for r in rows:
        if not r["fitted"] and abs(r["rel_error"]) > 0.20:
            flag = "" if r["within_2x"] else " [outside 2x]"
            out.append(f"  {r['case']} ({r['rel_error'] * 100:+.0f}%{flag}): {r['note']}")
    out.append("")
    out.append(summary_line(summarize(rows)))
    return "\n".join(out)


def markdown(rows: list[dict]) -> str:
    """The case table and the summary as Markdown (the block docs/validation.md shows)."""
    out = [
        "| # | case | measured | modeled | unit | error | fitted |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for i, r in enumerate(rows, 1):
        fit = "fitted" if r["fitted"] else ""
        out.append(
            f"| {i} | {r['case']} | {_num(r['measured'])} | {_num(r['modeled'])} | {r['unit']} "
            f"| {r['rel_error'] * 100:+.0f} % | {fit} |"
        )
    out += ["", "`" + summary_line(summarize(rows)) + "`", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="PATH", help="also write the cases as a JSON list")
    ap.add_argument("--markdown", metavar="PATH", help="also write the case table as Markdown")
    a = ap.parse_args(argv)
    rows = run_cases()
    print(render(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")
    if a.markdown:
        Path(a.markdown).write_text(markdown(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
