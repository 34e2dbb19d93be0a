"""``fedenergy meters``: what this host can measure, what it cannot and how to fix it."""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

from fedenergy.meters.detect import MeterSet, detect


def meters_report(ms: MeterSet, sample_s: float = 0.0) -> dict[str, Any]:
    """The report ``run_meters_command`` prints, as a plain dict."""
    meters = ms.describe()
    sample = None
    if sample_s > 0:
        ms.begin("meters-sample")
        time.sleep(sample_s)
        m = ms.end("meters-sample")
        sample = m.to_dict()
        for d in meters:
            names = {dom["name"] for dom in d["domains"]} if d["role"] != "unused" else set()
            d["sampled_j"] = {k: v for k, v in m.joules.items() if k in names}
    else:
        for d in meters:
            d["sampled_j"] = {}
    fallback = None
    if ms.fallback:
        fb = next(m for m in ms.candidates if m.name == ms.fallback)
        fallback = {
            "name": fb.name,
            "provenance": [x.provenance for x in fb.domains()],
            "notes": fb.notes(),
        }
    measured = [m.name for m in ms.total + ms.info if m.provenance == "measured"]
    return {
        "sysfs_root": getattr(ms.candidates[0], "root", "/") if ms.candidates else "/",
        "meters": meters,
        "selected": {
            "total": [m.name for m in ms.total],
            "informational": [m.name for m in ms.info],
        },
        "total_scope": ms.total_scope,
        "covers": ms.covers(),
        "cpu_clocks": str(getattr(ms.accounting, "source", "")),
        "measured": measured,
        "fallback": fallback,
        "sample": sample,
    }


def _text(rep: dict[str, Any], out: TextIO) -> None:
    w = out.write
    w(f"fedenergy meters — energy sources on this host (root {rep['sysfs_root']})\n\n")
    for d in rep["meters"]:
        mark = {"available": "ok ", "unreadable": "!! ", "absent": "-- "}[d["status"]]
        role = f" [{d['role']}]" if d["role"] != "unused" else ""
        w(f"  {mark}{d['name']:<10} {d['status']:<10}{role}")
        w(f"  {d['reason']}\n" if d["reason"] else "\n")
        for dom in d["domains"]:
            add = "" if dom["additive"] else " (informational, not added)"
            j = d["sampled_j"].get(dom["name"])
            js = f"  {j:.3f} J" if j is not None else ""
            w(f"       {dom['name']:<24} {dom['provenance']}{add}{js}\n")
        if d["fix"] and d["status"] != "available":
            w(f"       fix: {d['fix']}\n")
        for n in d.get("notes", []):
            w(f"       note: {n}\n")
    w("\n")
    if not rep["measured"]:
        w(
            "No sensor on this host measures energy (no readable RAPL, NVIDIA GPU, Jetson rails "
            "or discharging battery).\n"
        )
    if rep["fallback"]:
        fb = rep["fallback"]
        w(f"Modeled fallback in use: {fb['name']} ({', '.join(fb['provenance'])}).\n")
        for n in fb["notes"]:
            w(f"  {n}\n")
    else:
        w(f"Measured: {', '.join(rep['selected']['total'])} (total covers {rep['covers']}).\n")
    if rep["cpu_clocks"]:
        w(f"CPU-time share from: {rep['cpu_clocks']}\n")
    s = rep["sample"]
    if s:
        w(
            f"\nSample over {s['duration_s']:.2f} s: total {s['total_j']:.3f} J "
            f"({s['covers']}), this process {s['process_j']:.3f} J "
            f"(CPU share {s['process_share']:.2f}; {s['attribution_status']}"
            + (f", {s['unattributed_j']:.3f} J unattributed" if s["unattributed_j"] > 0 else "")
            + ").\n"
        )
        for f in s["warnings"]:
            w(f"  warning: {f}\n")


def run_meters_command(
    sample_s: float = 0.0,
    as_json: bool = False,
    sysfs_root: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Print what this host can measure (text or JSON); optionally sample for ``sample_s`` s.

    Returns a process exit code: 0 on success, 1 if sampling failed.
    """
    ms = detect(sysfs_root)
    try:
        try:
            rep = meters_report(ms, sample_s)
            code = 0
        except Exception as e:  # report, don't crash the CLI
            rep = meters_report(ms, 0.0)
            rep["sample_error"] = f"{type(e).__name__}: {e}"
            code = 1
        if as_json:
            json.dump(rep, out, indent=2, default=str)
            out.write("\n")
        else:
            _text(rep, out)
            if "sample_error" in rep:
                out.write(f"sampling failed: {rep['sample_error']}\n")
        return code
    finally:
        ms.close()
