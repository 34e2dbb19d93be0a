"""The options of the `fedenergy` command: one parser, its subcommands and their options."""

from __future__ import annotations

import argparse

from fedenergy.physics.infra import MODELS
from fedenergy.settings import Settings
from fedenergy.sim.app_runner import add_app_options
from fedenergy.sim.backend import add_backend_options


def int_menu(text: str) -> tuple[int, ...]:
    """``1,5,15,30`` as a tuple of integers (argparse type)."""
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers (e.g. 1,5,15,30), got {text!r}"
        ) from None


def label_menu(text: str) -> tuple[str, ...]:
    """``none,int8,stc:0.09`` as a tuple of labels (argparse type)."""
    return tuple(t.strip() for t in text.split(","))


STRATEGY_OPTIONS = (
    ("downlink", str, "global-model codec with --compression fixed: none, fp16, int8"),
    (
        "selector",
        str,
        "who trains: random (FedAvg's baseline), greedy (cheapest forecast "
        "joules) or utility (Oort-style utility per joule with exploration and fairness)",
    ),
    (
        "compression",
        str,
        "uplink codec policy: fixed (--codec for all), per-link (expensive "
        "links compress harder) or accuracy-aware (per-link, relaxed while accuracy stalls)",
    ),
    ("aggregator", str, "Flower aggregation: fedavg, fedprox or fedadam"),
    ("proximal_mu", float, "FedProx proximal term mu"),
    (
        "discovery",
        str,
        "how node profiles are learned: query (ask every node up front, round 0) or lazy "
        "(from each node's first reply; no up-front messages)",
    ),
    ("exploration", float, "utility selector: share of slots for unexplored nodes"),
    ("max_staleness", int, "utility selector: a node idle this many rounds is included"),
    (
        "energy_weight",
        float,
        "utility selector: score = utility / forecast joules ** this (0: ignore energy)",
    ),
    (
        "local_work",
        str,
        "local work per node: fixed (--local-epochs, --compression's codec) or priced (each "
        "node the epochs and codec of most forecast progress per joule; --selector chooses who "
        "trains by it; docs/strategies.md)",
    ),
    ("epoch_menu", int_menu, "priced local work: the local epochs to choose from, e.g. 1,5,15,30"),
    ("codec_menu", label_menu, "priced local work: the uplink codecs to choose from"),
    (
        "progress_tau_steps",
        float,
        "priced local work: local steps over which progress saturates (1 - exp(-steps/tau))",
    ),
    ("battery_floor", float, "skip battery nodes that would fall below this charge (0: off)"),
    ("round_budget_j", float, "forecast joules per round stay within this budget (0: off)"),
    (
        "target_accuracy",
        float,
        "stop once the server accuracy reaches this (0: off; --rounds is then a cap)",
    ),
    ("round_timeout_s", float, "seconds to wait for replies in a round"),
    (
        "min_nodes",
        int,
        "a round with fewer usable train replies (or all selected, if fewer) is short",
    ),
    ("max_short_rounds", int, "stop the run (failed) after this many short rounds in a row"),
)


def add_strategy_options(parser: argparse.ArgumentParser, d: Settings) -> None:
    """Options of the energy-aware strategy (shared by commands that run a federation)."""
    for name, typ, text in STRATEGY_OPTIONS:
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=typ,
            default=getattr(d, name),
            help=f"{text} (default {getattr(d, name)})",
        )


def strategy_settings(args: argparse.Namespace) -> dict:
    return {name: getattr(args, name) for name, _, _ in STRATEGY_OPTIONS if hasattr(args, name)}


# simulate's options that compare does not take: it has its own --out and --target-accuracy
# (both sides must reach it; the federated run then also stops there) and runs no app
NOT_COMPARED = ("help", "out", "target_accuracy", "resume", "app", "run_config")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (``args.command`` names the one given)."""
    d = Settings()
    p = argparse.ArgumentParser(
        prog="fedenergy", description="Energy-accounted federated learning on Flower."
    )
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("simulate", help="run a simulated federation and account its energy")
    s.add_argument(
        "--task",
        default=d.task,
        help="digits (default), synthetic, cnn, resnet, chars (docs/workloads.md), a catalog task "
        "or module:attribute",
    )
    s.add_argument("--nodes", type=int, default=d.nodes, help="number of simulated nodes")
    rounds_help = f"federated rounds (default {d.rounds}; with --app: the app's num-server-rounds)"
    s.add_argument("--rounds", type=int, default=None, help=rounds_help)
    s.add_argument(
        "--fraction",
        type=float,
        default=d.fraction,
        help="fraction of nodes that train each round, in (0, 1]",
    )
    s.add_argument(
        "--fraction-evaluate",
        type=float,
        default=d.fraction_evaluate,
        help="fraction of nodes that evaluate locally each round, in [0, 1]",
    )
    s.add_argument("--fleet", default=d.fleet, help="fleet name (simulations/fleets) or TOML path")
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--partitioner", default=d.partitioner, help="iid, dirichlet or sampled")
    s.add_argument("--alpha", type=float, default=d.dirichlet_alpha, help="Dirichlet alpha")
    s.add_argument("--local-epochs", type=int, default=d.local_epochs)
    s.add_argument("--batch-size", type=int, default=d.batch_size)
    s.add_argument("--lr", type=float, default=d.lr)
    s.add_argument(
        "--infra-kwh-per-gb",
        type=float,
        default=d.infra_kwh_per_gb,
        help="network infrastructure intensity of the per-byte model (0 excludes it)",
    )
    s.add_argument(
        "--infra-model",
        choices=MODELS,
        default=d.infra_model,
        help="network infrastructure model: per-byte (kWh/GB, the default) or power "
        "(baseline power over the call + marginal per byte; docs/constants.md)",
    )
    s.add_argument(
        "--boundary",
        choices=("device", "marginal"),
        default=d.boundary,
        help="energy accounting boundary: device (whole-device, the default) or marginal "
        "(above idle)",
    )
    s.add_argument(
        "--startup",
        choices=("per-call", "off"),
        default=d.startup,
        help="charge the start-up of Flower's per-message ClientApp process (per-call, the "
        "default) or not (off)",
    )
    s.add_argument(
        "--codec",
        default=d.codec,
        help="uplink update codec: none (default), fp16, int8, int8:channel, topk:0.01, "
        "stc:0.09, stcb:0.02 (these three with error feedback), qsgd:16",
    )
    add_strategy_options(s, d)
    s.add_argument(
        "--strict-reports",
        action="store_true",
        default=d.strict_reports,
        help="refuse replies without an energy report (default: a stock Flower app's replies "
        "are accepted, their network energy modeled from bytes, their compute unmetered)",
    )
    s.add_argument(
        "--keepalive",
        action="store_true",
        default=d.keepalive,
        help="account a deployed SuperNode's keep-alive traffic (polls every 3 s, heartbeats "
        "every ~20 s, flwr 1.42) in the radio between a node's calls (default: off)",
    )
    s.add_argument(
        "--checkpoint-keep",
        type=int,
        default=d.checkpoint_keep,
        help="keep the model checkpoints of the last N committed rounds, for --resume "
        f"(OUT/checkpoints/; 0 keeps all; default {d.checkpoint_keep})",
    )
    s.add_argument("--out", default=d.out, help="output directory (ledger.sqlite, summary.json)")
    s.add_argument(
        "--catalog",
        action="append",
        default=None,
        metavar="PATH",
        help="a user catalog (a TOML file or a directory of them: your own devices, links, "
        "fleets and tasks, docs/catalogs.md), merged over the packaged one; repeatable",
    )
    s.add_argument("--verbose", action="store_true", help="show Flower's and Ray's logs")
    s.add_argument(
        "--resume",
        default=None,
        metavar="OUT_DIR",
        help="continue the latest run in OUT_DIR from its last committed round, with its saved "
        "settings (other options are ignored)",
    )
    add_app_options(s)
    add_backend_options(s)
    r = sub.add_parser("report", help="print the summary of a saved ledger")
    r.add_argument(
        "run_dir",
        nargs="+",
        help="a run directory or a ledger.sqlite file; more of them, or a directory of run "
        "directories (e.g. the output of simulations/energy_to_accuracy.py), add one "
        "accuracy-against-energy curve per run to the HTML report of the first",
    )
    r.add_argument("--run-id", default=None, help="which run (default: the latest)")
    r.add_argument("--json", action="store_true")
    r.add_argument(
        "--no-files",
        action="store_true",
        help="only print; do not rewrite report.html/md, plots and ledger exports in RUN_DIR",
    )
    c = sub.add_parser(
        "compare",
        help="a federated run against the centralized baseline, to the same accuracy",
    )
    for action in s._actions:  # the simulate options (argparse's own `parents` mechanism)
        if action.option_strings and action.dest not in NOT_COMPARED:
            c._add_action(action)
    c.add_argument("--out", default="runs/compare", help="output directory")
    c.add_argument(
        "--target-accuracy",
        type=float,
        default=None,
        help="server accuracy both sides must reach (default: the federated final accuracy)",
    )
    c.add_argument("--datacenter", default="gpu-server", help="gpu-server (default) or cpu-server")
    c.add_argument(
        "--datacenter-country", default="USA", help="ISO-3166 alpha-3 of the datacenter's grid"
    )
    c.add_argument("--max-epochs", type=int, default=200, help="cap on centralized epochs")
    c.add_argument(
        "--from-run", default=None, help="compare a saved federated run (dir or ledger) instead"
    )
    c.add_argument(
        "--no-measure", action="store_true", help="do not meter the centralized training here"
    )
    c.add_argument("--json", action="store_true", help="print comparison.json")
    m = sub.add_parser("meters", help="what this host can measure, and a short sample")
    m.add_argument("--sample", type=float, default=0.0, help="seconds to sample")
    m.add_argument("--json", action="store_true")
    m.add_argument("--sysfs-root", default=None, help="read sysfs/procfs under this directory")
    return p
