"""The centralized baseline: every node uploads its raw data once, a datacenter trains on the pool.

Counted (all modeled, docs/compare.md):
  * upload: each node sends its partition once (float32 features + int64 labels) over its own
    link: device radio (Huang et al. model, one upload plus its tail) + network infrastructure
    (bytes x kWh/GB, the same intensity as the federated run);
  * training: the task's model, plain minibatch SGD with the federated run's learning rate and
    batch size, epoch by epoch on the pooled data, evaluated after each epoch on the same server
    test set, until the target accuracy (or ``max_epochs``); FLOPs
    (fedenergy.physics.flops) through the datacenter device profile (``gpu-server`` or
    ``cpu-server``), then x its PUE;
  * measured: the same training is also metered on THIS host (fedenergy.meters.detect). That is
    information, never added to the modeled total: this host is not the modeled datacenter, and
    without a sensor the figure is itself a model (``provenance`` says which).
Not counted on either side: the server's per-round/per-epoch evaluation on the test set (the
federated ledger does not count the server either) and the server's idle power.
"""

from __future__ import annotations

from fedenergy.analysis.carbon import INFRA_COUNTRY, Carbon, co2e_with_infra, facility_factor
from fedenergy.physics.call import call_energy
from fedenergy.physics.compute import DEVICE, OFF, Work, call_compute, steps_for
from fedenergy.physics.flops import FlopCache
from fedenergy.physics.infra import other_model
from fedenergy.plan import RunPlan
from fedenergy.sim.tasks import DataConfig, Task, evaluate, train_epochs

DEFAULT_DATACENTER = "gpu-server"
DEFAULT_COUNTRY = "USA"
DEFAULT_MAX_EPOCHS = 200
LABEL_BYTES = 8  # int64


def _split_bytes(split) -> int:
    return int(split.x.numel()) * split.x.element_size() + len(split) * LABEL_BYTES


def node_upload_samples(task: Task, cfg: DataConfig) -> list[tuple[int, int]]:
    """(samples, raw bytes) every partition of ``task``'s data split ``cfg`` uploads so that
    the server holds the pooled data.

    A partition's data is its train split plus its local test split (when distinct). If the
    pooled set is only the union of the train splits (``synthetic``: the local test splits form
    the server's test set), only the train split is uploaded.
    """
    pooled = len(task.pooled_train_data(cfg))
    parts = [task.client_data(p, cfg) for p in range(cfg.num_partitions)]
    train_only = [(len(tr), _split_bytes(tr)) for tr, _ in parts]
    both = []
    for tr, te in parts:
        same = te.x.data_ptr() == tr.x.data_ptr() or (
            len(te) == len(tr) and bool((te.x == tr.x).all())
        )
        n, b = (
            (len(tr), _split_bytes(tr))
            if same
            else (
                len(tr) + len(te),
                _split_bytes(tr) + _split_bytes(te),
            )
        )
        both.append((n, b))
    if sum(n for n, _ in both) == pooled:
        return both
    return train_only


def measure_host(train_fn):
    """Run ``train_fn`` inside a meter window of this host. Returns (result, info dict)."""
    try:
        from fedenergy.meters import detect

        meters = detect()
    except Exception as err:  # no meter at all: train unmetered
        return train_fn(), {"available": False, "reason": f"meter detection failed: {err}"}
    try:
        with meters.window("centralized") as handle:
            result = train_fn()
        m = handle.measurement
    finally:
        meters.close()
    provs = sorted(set(m.provenance.values()))
    measured = meters.fallback is None and any(p.startswith("measured") for p in provs)
    info = {
        "available": measured,
        "provenance": "measured" if measured else f"modeled fallback ({meters.fallback})",
        "sources": provs,
        "machine_j": m.total_j,
        "process_j": m.process_j,
        "seconds": m.duration_s,
        "note": (
            "energy of this host (not the modeled datacenter) while training the pooled model; "
            "not added to the modeled total"
            + ("" if measured else "; no energy sensor here, so this figure is itself a model")
        ),
    }
    return result, info


def run_centralized(
    plan: RunPlan,
    target_accuracy: float,
    device: str = DEFAULT_DATACENTER,
    country: str = DEFAULT_COUNTRY,
    max_epochs: int = DEFAULT_MAX_EPOCHS,
    measure: bool = True,
) -> dict:
    """Train the pooled data centrally until ``target_accuracy``, with the task, data, fleet and
    hyperparameters of the federated run ``plan``; return the energy record."""
    settings = plan.settings
    dc = plan.catalog.device(device)
    if dc.kind != "datacenter":
        raise ValueError(f"device {device!r} is not a datacenter profile (kind {dc.kind!r})")
    if max_epochs <= 0:
        raise ValueError(f"max-epochs must be a positive integer, got {max_epochs!r}")
    task, cfg = plan.task, plan.data
    carbon = Carbon()

    # 1. every node uploads its raw data once over its own link
    uploads, radio_j, infra_j, up_s = [], 0.0, 0.0, 0.0
    other, infra_other_j = other_model(settings.infra_model), 0.0
    for prof, (n, nbytes) in zip(plan.profiles, node_upload_samples(task, cfg), strict=True):
        # one upload + tail; whole-device: the node's idle base while it uploads
        wait_w = prof.device.idle_power_w if settings.boundary == DEVICE else 0.0
        e = call_energy(
            prof.link,
            0,
            nbytes,
            settings.infra_kwh_per_gb,
            wait_w=wait_w,
            infra_model=settings.infra_model,
        )
        carbon.add(e.upload_radio_j + e.wait_j, prof.country, prof.device)
        carbon.add(e.upload_infra_j, INFRA_COUNTRY, None, note_fallback=False)
        radio_j += e.upload_radio_j + e.wait_j
        infra_j += e.upload_infra_j
        infra_other_j += call_energy(
            prof.link, 0, nbytes, settings.infra_kwh_per_gb, infra_model=other
        ).upload_infra_j
        up_s = max(up_s, e.upload_s)
        uploads.append(
            {
                "partition_id": prof.partition_id,
                "device": prof.device.id,
                "link": prof.link.id,
                "country": prof.country,
                "samples": n,
                "bytes": nbytes,
                "radio_j": e.upload_radio_j + e.wait_j,
                "wait_j": e.wait_j,
                "infrastructure_j": e.upload_infra_j,
                "seconds": e.upload_s,
            }
        )
    network_pue = sum(
        u["radio_j"] * (facility_factor(plan.catalog.device(u["device"])) - 1.0) for u in uploads
    )

    # 2. train on the pooled data, epoch by epoch, until the target accuracy
    pooled = task.pooled_train_data(cfg)
    test = task.server_test_data(cfg)
    model = task.make_model()
    flops_per_epoch = FlopCache().training(model, pooled.x, len(pooled), settings.batch_size, 1)
    # one long-lived process on all the trainer's cores: no per-call start-up
    epoch_work = Work(
        flops_per_epoch, steps_for(len(pooled), settings.batch_size, 1), settings.batch_size, 0
    )
    epoch_cost = call_compute(dc.terms, epoch_work, settings.boundary, OFF)
    epoch_it_j = epoch_cost.compute_j
    fac = facility_factor(dc)
    upload_total = radio_j + infra_j + network_pue

    def train() -> list[dict]:
        loss, acc = evaluate(model, test)
        curve = [{"epoch": 0, "accuracy": acc, "loss": loss, "cumulative_j": upload_total}]
        epoch = 0
        while acc < target_accuracy and epoch < max_epochs:
            epoch += 1
            train_epochs(
                model, pooled, 1, settings.batch_size, settings.lr, settings.seed * 100003 + epoch
            )
            loss, acc = evaluate(model, test)
            curve.append(
                {
                    "epoch": epoch,
                    "accuracy": acc,
                    "loss": loss,
                    "cumulative_j": upload_total + epoch * epoch_it_j * fac,
                }
            )
        return curve

    if measure:
        curve, measured = measure_host(train)
    else:
        curve, measured = train(), {"available": False, "reason": "not requested"}
    epochs = curve[-1]["epoch"]
    compute_it = epochs * epoch_it_j
    carbon.add(compute_it, country, dc)
    final = curve[-1]["accuracy"]
    pue_overhead = compute_it * (fac - 1.0) + network_pue
    return {
        "device": dc.id,
        "device_label": dc.label,
        "pue": dc.pue,
        "country": country.strip().upper(),
        "target_accuracy": target_accuracy,
        "reached": final >= target_accuracy,
        "epochs": epochs,
        "max_epochs": max_epochs,
        "accuracy": final,
        "samples": len(pooled),
        "flops": flops_per_epoch * epochs,
        "steps": epoch_work.steps * epochs,
        "boundary": settings.boundary,
        "compute_j": compute_it,
        "network_j": radio_j,
        "infrastructure_j": infra_j,
        "pue_overhead_j": pue_overhead,
        "total_j": compute_it + radio_j + infra_j + pue_overhead,
        "infra_model_other": other,
        "total_j_other_infra": compute_it + radio_j + infra_other_j + pue_overhead,
        "kwh": carbon.kwh,
        "co2e_kg": carbon.co2e_kg,
        "co2e_kg_other_infra": co2e_with_infra(carbon.co2e_kg, infra_j, infra_other_j),
        "carbon": carbon.as_dict(),
        "upload_bytes": sum(u["bytes"] for u in uploads),
        "upload_s": up_s,
        "compute_s": epoch_cost.compute_s * epochs,
        "time_s": up_s + epoch_cost.compute_s * epochs,
        "by_phase": {"upload": radio_j + infra_j, "train": compute_it},
        "uploads": uploads,
        "per_epoch": curve,
        "measured_host": measured,
    }
