"""Inline SVG charts for the HTML report: no script, no external file, renders in any browser.

Two charts: curves of accuracy against cumulative energy (one polyline per run) and stacked
horizontal bars (joules per device class, one segment per phase). Every drawn element carries
an id or class and ``data-`` attributes, so a test can find what was drawn in the DOM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape

# matplotlib's tab10 colours, so the SVG and the PNG plots agree
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
DASHES = ("", "6 3", "2 2", "8 3 2 3")
W, H = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 20, 50


@dataclass(frozen=True)
class Curve:
    """One run's accuracy after each round against the joules spent until then."""

    label: str
    points: tuple[tuple[float, float], ...]  # (cumulative J, accuracy)
    marker: str = "circle"  # circle | square


def color(i: int) -> str:
    """The colour of series ``i`` (shared by a curve and its legend entry)."""
    return PALETTE[i % len(PALETTE)]


def dash(i: int) -> str:
    """The dash pattern of series ``i``: solid for the first ten, then patterned."""
    return DASHES[(i // len(PALETTE)) % len(DASHES)]


def _nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2 or 5 x 10^k)."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    return [start + k * step for k in range(int(math.ceil((hi - start) / step)) + 1)]


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.0e}".replace("e+0", "e").replace("e+", "e")
    return f"{v:g}"


def accuracy_energy_svg(
    curves: list[Curve], target: float | None = None, svg_id: str = "accuracy-vs-energy"
) -> str:
    """Accuracy (0..1) against cumulative joules, one polyline per curve (``id="curve-I"``,
    ``data-run`` its label); a logarithmic energy axis when the curves span > 30x in joules."""
    xs = [x for c in curves for x, _ in c.points]
    positive = [x for x in xs if x > 0]
    log = bool(positive) and max(positive) / min(positive) > 30
    if log:
        lo = math.floor(math.log10(min(positive)))
        hi = max(math.ceil(math.log10(max(positive))), lo + 1)
        ticks = [10.0**k for k in range(int(lo), int(hi) + 1)]
    else:
        ticks = _nice_ticks(0.0, max(xs, default=1.0) or 1.0)
        lo, hi = ticks[0], ticks[-1]
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def px(x: float) -> float:
        v = math.log10(x) if log else x
        return LEFT + (v - lo) / (hi - lo) * pw

    def py(y: float) -> float:
        return TOP + (1.0 - y) * ph

    out = [
        f'<svg id="{svg_id}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
        f'viewBox="0 0 {W} {H}" role="img" aria-label="accuracy against cumulative energy" '
        f'data-scale="{"log" if log else "linear"}">',
        f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fff" stroke="#444"/>',
    ]
    for t in ticks:
        x = px(t)
        out.append(
            f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{TOP + ph}" '
            f'stroke="#ddd"/><text x="{x:.1f}" y="{TOP + ph + 16}" font-size="11" '
            f'text-anchor="middle">{_fmt_tick(t)}</text>'
        )
    for k in range(6):
        y = py(k / 5)
        out.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" '
            f'stroke="#ddd"/><text x="{LEFT - 6}" y="{y + 4:.1f}" font-size="11" '
            f'text-anchor="end">{k / 5:.1f}</text>'
        )
    out.append(
        f'<text x="{LEFT + pw / 2}" y="{H - 10}" font-size="12" text-anchor="middle">'
        f"cumulative energy, all nodes and phases (J{', log scale' if log else ''})</text>"
        f'<text x="16" y="{TOP + ph / 2}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + ph / 2})">server test accuracy</text>'
    )
    if target is not None:
        y = py(target)
        out.append(
            f'<line id="target" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + pw}" y2="{y:.1f}" '
            f'stroke="#888" stroke-dasharray="5 4"/>'
        )
    for i, c in enumerate(curves):
        pts = [(px(x), py(y)) for x, y in c.points if (x > 0 or not log) and y is not None]
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        d = dash(i)
        out.append(
            f'<g class="run" data-run="{escape(c.label)}"><polyline id="curve-{i}" '
            f'class="curve" data-run="{escape(c.label)}" data-points="{len(pts)}" '
            f'points="{coords}" fill="none" stroke="{color(i)}" stroke-width="2"'
            + (f' stroke-dasharray="{d}"' if d else "")
            + ">"
            f"<title>{escape(c.label)}</title></polyline>"
        )
        for x, y in pts:
            if c.marker == "square":
                out.append(
                    f'<rect class="point" x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6" '
                    f'fill="{color(i)}"/>'
                )
            else:
                out.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="3" '
                           f'fill="{color(i)}"/>')  # fmt: skip
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)


def legend_html(labels: list[str], list_id: str = "curve-legend") -> str:
    """An HTML legend of the curves (beside the SVG, so long labels wrap)."""
    items = [
        f'<li data-run="{escape(label)}"><span class="swatch" style="background:{color(i)}">'
        f"</span>{escape(label)}</li>"
        for i, label in enumerate(labels)
    ]
    return f'<ul id="{list_id}" class="legend">' + "".join(items) + "</ul>"


def stacked_bars_svg(
    rows: list[tuple[str, dict[str, float]]], phases: list[str], svg_id: str = "device-bars"
) -> str:
    """One horizontal bar per row (``class="device-bar"``, ``data-class`` its label), one
    segment per phase (``class="phase-seg"``, ``data-phase``), in joules; legend of phases."""
    label_w, row_h, gap = 170, 22, 8
    top = 30
    h = top + len(rows) * (row_h + gap) + 40
    pw = W - label_w - RIGHT
    biggest = max((sum(v.values()) for _, v in rows), default=0.0) or 1.0
    ticks = _nice_ticks(0.0, biggest, 5)
    scale = pw / ticks[-1]
    out = [
        f'<svg id="{svg_id}" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" '
        f'viewBox="0 0 {W} {h}" role="img" aria-label="energy per device class and phase">'
    ]
    x = label_w
    for i, p in enumerate(phases):  # legend of phases along the top
        out.append(
            f'<rect x="{x}" y="6" width="12" height="12" fill="{color(i)}"/>'
            f'<text x="{x + 16}" y="16" font-size="11">{escape(p)}</text>'
        )
        x += 24 + 7 * len(p)
    for t in ticks:
        gx = label_w + t * scale
        out.append(
            f'<line class="grid" x1="{gx:.1f}" y1="{top - 4}" x2="{gx:.1f}" y2="{h - 36}" '
            f'stroke="#ddd"/><text x="{gx:.1f}" y="{h - 22}" font-size="11" '
            f'text-anchor="middle">{_fmt_tick(t)}</text>'
        )
    out.append(
        f'<text x="{label_w + pw / 2}" y="{h - 6}" font-size="12" text-anchor="middle">'
        "energy (J)</text>"
    )
    for r, (label, by_phase) in enumerate(rows):
        y = top + r * (row_h + gap)
        out.append(
            f'<g class="device-bar" data-class="{escape(label)}">'
            f'<text x="{label_w - 6}" y="{y + row_h * 0.7:.1f}" font-size="12" '
            f'text-anchor="end">{escape(label)}</text>'
        )
        x = float(label_w)
        for i, p in enumerate(phases):
            j = by_phase.get(p, 0.0)
            if j <= 0:
                continue
            w = j * scale
            out.append(
                f'<rect class="phase-seg" data-phase="{escape(p)}" data-joules="{j:.6g}" '
                f'x="{x:.1f}" y="{y}" width="{max(w, 0.5):.1f}" height="{row_h}" '
                f'fill="{color(i)}"><title>{escape(label)} {escape(p)}: {j:.4g} J</title></rect>'
            )
            x += w
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out)
