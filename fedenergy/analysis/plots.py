"""PNG plots of a run and of a comparison (matplotlib, headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402

PHASE_ORDER = ("query", "download", "train", "evaluate", "upload", "startup")


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_vs_energy(summary: dict, comparison: dict | None, path: str | Path) -> Path:
    """Server accuracy against cumulative energy (J): federated rounds, centralized epochs."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if comparison is not None:
        fed = comparison["federated"]["per_round"]
    else:
        fed, cum = [], 0.0
        for r in summary["per_round"]:
            cum += r["joules"]
            fed.append({**r, "cumulative_j": cum})
    pts = [(r["cumulative_j"], r["accuracy"]) for r in fed if r["accuracy"] is not None]
    if pts:
        ax.plot(*zip(*pts, strict=True), "o-", label="federated (per round)", color="tab:blue")
    if comparison is not None:
        cen = comparison["centralized"]["per_epoch"]
        ax.plot(
            [e["cumulative_j"] for e in cen],
            [e["accuracy"] for e in cen],
            "s-",
            label=f"centralized on {comparison['centralized']['device']} (per epoch)",
            color="tab:orange",
        )
        t = comparison["target_accuracy"]
        ax.axhline(t, ls="--", color="grey", lw=1, label=f"target {t:.3f}")
    ax.set_xlabel("cumulative energy (J, PUE included)")
    ax.set_ylabel("server test accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Accuracy against cumulative energy")
    return _save(fig, Path(path))


def energy_per_phase(summary: dict, comparison: dict | None, path: str | Path) -> Path:
    """Energy per phase (J): the whole federated run, and, if given, both sides to target."""
    sides: list[tuple[str, dict]] = []
    if comparison is not None:
        sides.append(("federated (to target)", comparison["federated"]["by_phase"]))
        sides.append(("centralized", comparison["centralized"]["by_phase"]))
    else:
        sides.append(("federated run", summary["by_phase"]))
    phases = [p for p in PHASE_ORDER if any(p in s for _, s in sides)]
    phases += sorted({p for _, s in sides for p in s} - set(phases))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(sides)
    colors = ("tab:blue", "tab:orange")
    for i, (label, by_phase) in enumerate(sides):
        xs = [j + i * width for j in range(len(phases))]
        ax.bar(xs, [by_phase.get(p, 0.0) for p in phases], width, label=label, color=colors[i])
    ax.set_xticks([j + width * (len(sides) - 1) / 2 for j in range(len(phases))], phases)
    ax.set_ylabel("energy (J)")
    ax.set_title("Energy per phase")
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, Path(path))


def energy_per_device_class(summary: dict, path: str | Path) -> Path:
    """Stacked compute / network energy per device class of the federated run."""
    classes = list(summary["per_device_class"])
    comp = [summary["per_device_class"][c]["compute_j"] for c in classes]
    net = [summary["per_device_class"][c]["network_j"] for c in classes]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.barh(classes, net, label="network", color="tab:blue")
    ax.barh(classes, comp, left=net, label="compute", color="tab:green")
    ax.set_xlabel("energy (J)")
    ax.set_title("Federated energy per device class (device/link)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend()
    return _save(fig, Path(path))


def write_plots(summary: dict, comparison: dict | None, out_dir: str | Path) -> list[Path]:
    """All PNGs of a run directory; returns their paths."""
    out = Path(out_dir)
    return [
        accuracy_vs_energy(summary, comparison, out / "accuracy_vs_energy.png"),
        energy_per_phase(summary, comparison, out / "energy_per_phase.png"),
        energy_per_device_class(summary, out / "energy_per_device_class.png"),
    ]
