"""The published measurements the validation suite reproduces: each case's source, setup and
measured figure, as data, and the adapter call that gives the model's figure for that setup.

How each measured figure was read or derived is documented in docs/validation.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from validation_model import (
    model_link_mbps,
    model_power_w,
    model_radio_power_w,
    model_train_time_s,
    model_transfer_device_w,
)

REFERENCES = {
    "sbc-reviews": (
        "J. Geerling, sbc-reviews benchmark results, web/data/results.yml, "
        "github.com/geerlingguy/sbc-reviews @968b675 (2026-04-10). power_watts.idle = 'Idle "
        "power draw (at wall)', power_watts.stress = 'Maximum simulated power draw (stress-ng "
        "--matrix 0)' (.github/ISSUE_TEMPLATE/sbc-board.md)"
    ),
    "gokrazy": (
        "M. Stapelberg, comment of 2021-11-28 on gokrazy/gokrazy issue #70 'Power Consumption "
        "stats' (github.com/gokrazy/gokrazy/issues/70): idle power including the power supply "
        "(the official Raspberry Pi 4 supply for the Pi 4)"
    ),
    "narayanan": (
        "A. Narayanan et al., 'A Variegated Look at 5G in the Wild: Performance, Power, and QoE "
        "Implications', ACM SIGCOMM 2021; artifact github.com/SIGCOMM21-5G/artifact @35aaf28, "
        "Data-Transfer-Power/MN-Transfer/data-processed/MN-Transfer_combined.csv (Verizon, "
        "Minneapolis, Monsoon power monitor, whole phone), binned per iPerf target rate and "
        "fitted with np.polyfit exactly as the authors' plot-section4-figure11.py (Figure 11)"
    ),
    "aau": (
        "Aalborg University, 'Energy measurements on mobile phones: data download for "
        "different technologies' (mobiledevices.kom.aau.dk/research/"
        "energy_measurements_on_mobile_phones/results/data_communication/"
        "data_download_for_different_technologies/): 250 downloads of 500 KB, other air "
        "interfaces off, parametrized model E_bit = A + B*(rate - C); Wi-Fi 802.11b/g: "
        "A = 6.45e-7 J/bit, B = -1.27e-10, C = 2.13e3 kbit/s, valid 2000-5000 kbit/s"
    ),
    "xu": (
        "D. Xu, A. Zhou, X. Zhang et al., 'Understanding Operational 5G: A First Measurement "
        "Study on Its Coverage, Performance and Energy Consumption', ACM SIGCOMM 2020, abstract "
        "(openreview.net/forum?id=PWh_5aXEpPp): on smartphones 'power consumption escalates to "
        "2 - 3x over 4G' (NSA 3.5 GHz campus network)"
    ),
    "embedded-vision": (
        "J. Fernandez-Marques (Flower Labs), 'Raspberry Pi 5: Ready for Federated Vision', Flower "
        "blog, 2023-12-07 (flower.ai/blog/2023-12-07-raspberrypi-is-ready-for-fl), and its "
        "benchmark github.com/jafermarq/federated-embedded-vision @17ecd8b: eflbench/jobs.py "
        "train() times 20 SGD steps (lr 0.1) of timm models, 1000 classes, batch 16 of 3x224x224 "
        "JPEGs read with torchvision ImageFolder (num_workers 0), no frozen parameters, PyTorch "
        "CPU with its default threads; Raspberry Pi 4 figures from results/blog/"
        "rpi4_bench_results.pkl (board 'RPi 4'), Raspberry Pi 5 figures from the output table "
        "the README shows for a Raspberry Pi 5 ('python main.py job.max_steps=20 "
        "dataset_fn=in_fs')"
    ),
    "tapp": (
        "A. Tapp, H. R. Roth, Z. Xu, A. Parida, H. Nisar, M. G. Linguraru, 'Standardized Methods "
        "and Recommendations for Green Federated Learning', ACM e-Energy '26 (arXiv 2602.00343), "
        "abstract (arxiv.org/html/2602.00343v1): in retinal segmentation 'swapping GPU tiers "
        "(H100 vs. V100) yields a consistent ~1.7x runtime gap (290 vs. 503 minutes)'; setup from "
        "the authors' code, github.com/Pediatric-Accelerated-Intelligence-Lab/carbon_footprint "
        "(RetSeg/README.md, RetSeg/train.py, RetSeg/modules/learner.py, RetSeg/model/unet.py)"
    ),
}

# Strings that identify each publication inside a constant's source text (lower case).
SOURCE_KEYS = {
    "sbc-reviews": ("sbc-reviews",),
    "gokrazy": ("gokrazy",),
    "narayanan": ("narayanan", "sigcomm21-5g"),
    "aau": ("aau.dk", "aalborg"),
    "xu": ("xu et al", "operational 5g", "pwh_5aXEpPp".lower()),
    "embedded-vision": (
        "federated-embedded-vision",
        "raspberrypi-is-ready-for-fl",
        "ready for federated vision",
    ),
    "tapp": ("tapp et al", "2602.00343", "green federated learning", "carbon_footprint"),
}


@dataclass(frozen=True)
class Case:
    """One published measurement and the model's figure for the same setup."""

    case: str
    kind: str  # device_power | transfer | training | federation
    ref: str  # key of REFERENCES / SOURCE_KEYS
    where: str  # table, figure or entry inside the source
    setup: str
    measured: float
    unit: str
    model: Callable[[], float]
    uses: tuple[tuple[str, str], ...]  # catalog entries (table, id) the modeled figure uses
    constants: tuple[str, ...]  # "table:id.field" of the constants that set the figure
    note: str  # why the figure can miss: the setup or the nature of those constants


def _marginal_nj_per_bit(link: str, direction: str, lo: float, hi: float) -> float:
    """Modeled radio power slope between ``lo`` and ``hi`` Mbit/s, in nJ/bit (= mW per Mbit/s)."""
    p_lo, p_hi = (model_radio_power_w(link, direction, r) for r in (lo, hi))
    return (p_hi - p_lo) / (hi - lo) * 1000.0


def _aau_wifi_j_per_bit(kbps: float) -> float:
    return 6.45e-7 + -1.27e-10 * (kbps - 2.13e3)


# FLOPs of one SGD step on a batch of 16 3x224x224 images (1000 classes), counted by
# simulations/validation_flops.py with fedenergy's convention (tests/test_validate.py recounts).
RESNET18_STEP_FLOPS = 170_397_973_584
MOBILENETV2_STEP_FLOPS = 28_534_523_344
BENCH_STEPS, BENCH_BATCH = 20, 16


def _bench_time_s(device: str, step_flops: int) -> float:
    """Modeled seconds of the benchmark's training job: 20 steps of batch 16."""
    return model_train_time_s(device, BENCH_STEPS * step_flops, BENCH_STEPS, BENCH_BATCH)


def _bench_setup(board: str, model: str, step_flops: int) -> str:
    return (
        f"{board}, PyTorch CPU (default threads), {model} (1000 classes), 20 SGD steps of "
        f"batch 16 at 3x224x224 read from JPEG files, all parameters trained; "
        f"{step_flops / 1e9:.1f} GFLOP a step (simulations/validation_flops.py)"
    )


_THROUGHPUT_NOTE = (
    "train_flops_per_s is one effective rate per device (FP32 peak x 21.9 %, the marginal "
    "efficiency measured on the project host for small models and assumed to carry over), "
    "10.5 GFLOP/s on a Pi 4 and 33.8 on a Pi 5. The measured rates depend on the architecture: "
    "ResNet-18's dense 3x3 convolutions run at 15.6 (Pi 4) and 29.2 (Pi 5) GFLOP/s, "
    "MobileNetV2's depthwise layers at 1.9 and 4.0 (measured FLOPs / measured time): on the "
    "Pi 4 the constant is 1.5x too slow for the first and 5.6x too fast for the second (on "
    "the Pi 5, 1.2x and 8.5x too fast). No single FLOP rate fits both, and the "
    "20 x step_overhead_s term adds under 10 ms. The measured time also "
    "includes decoding the JPEGs (num_workers 0)"
)


def _sbc(board: str, issue: int) -> str:
    return f"results.yml entry '{board}' (issue #{issue})"


CASES: tuple[Case, ...] = (
    Case(
        "rpi4 idle",
        "device_power",
        "sbc-reviews",
        _sbc("Raspberry Pi 4 model B", 4),
        "Pi 4 B, booted, idle, at the wall",
        1.6,
        "W",
        lambda: model_power_w("rpi4", "idle"),
        (("devices", "rpi4"),),
        ("devices:rpi4.idle_power_w",),
        "the constant is the zero-load intercept of a CPU-utilisation regression, which sits "
        "above a headless board's measured idle floor",
    ),
    Case(
        "rpi4 load",
        "device_power",
        "sbc-reviews",
        _sbc("Raspberry Pi 4 model B", 4),
        "Pi 4 B, stress-ng --matrix 0 on all cores, at the wall",
        5.0,
        "W",
        lambda: model_power_w("rpi4", "load"),
        (("devices", "rpi4"),),
        ("devices:rpi4.active_power_w",),
        "the constant is the full-load end of a CPU-utilisation regression fitted on one "
        "board; Pi 4 firmware updates in 2019 took 'nearly a watt out of fully loaded power' "
        "(raspberrypi.org blog 'Thermal testing Raspberry Pi 4', The MagPi)",
    ),
    Case(
        "rpi4 idle (with PSU)",
        "device_power",
        "gokrazy",
        "issue #70, comment of 2021-11-28, table row 'rpi4'",
        "Pi 4, gokrazy, idle, measured before the official power supply",
        2.8,
        "W",
        lambda: model_power_w("rpi4", "idle"),
        (("devices", "rpi4"),),
        ("devices:rpi4.idle_power_w",),
        "this figure includes the power supply's loss, which the constant leaves out",
    ),
    Case(
        "rpi5 idle",
        "device_power",
        "sbc-reviews",
        _sbc("Raspberry Pi 5 model B", 21),
        "Pi 5 B, booted, idle, at the wall",
        2.8,
        "W",
        lambda: model_power_w("rpi5", "idle"),
        (("devices", "rpi5"),),
        ("devices:rpi5.idle_power_w",),
        "the constant is the zero-load intercept of a CPU-utilisation regression, far above a "
        "measured idle",
    ),
    Case(
        "rpi5 load",
        "device_power",
        "sbc-reviews",
        _sbc("Raspberry Pi 5 model B", 21),
        "Pi 5 B, stress-ng --matrix 0 on all cores, at the wall",
        9.7,
        "W",
        lambda: model_power_w("rpi5", "load"),
        (("devices", "rpi5"),),
        ("devices:rpi5.active_power_w",),
        "a CPU-load regression; the wall figure adds the active cooler, PSU loss and memory "
        "traffic of a matrix load",
    ),
    Case(
        "laptop idle",
        "device_power",
        "sbc-reviews",
        _sbc("Framework 13 AMD", 90),
        "Framework 13, Ryzen AI 5 340 (6 cores), 28 W-class U-series laptop, idle, at the wall "
        "(profile: Ryzen 7 7840U-class)",
        2.7,
        "W",
        lambda: model_power_w("laptop", "idle"),
        (("devices", "laptop"),),
        ("devices:laptop.idle_power_w",),
        "the constant is an ASSUMPTION ('typical 3-6 W'); a current laptop idles lower, and "
        "the measured machine has a different (6-core) CPU",
    ),
    Case(
        "laptop load",
        "device_power",
        "sbc-reviews",
        _sbc("Framework 13 AMD", 90),
        "Framework 13, Ryzen AI 5 340, stress-ng --matrix 0, at the wall (profile: Ryzen 7 "
        "7840U-class)",
        46.7,
        "W",
        lambda: model_power_w("laptop", "load"),
        (("devices", "laptop"),),
        ("devices:laptop.active_power_w",),
        "the constant is the package TDP plus an ASSUMPTION for the platform; under an "
        "all-core load the chip boosts above its TDP and the wall adds charger loss",
    ),
    Case(
        "LTE downlink, marginal energy",
        "transfer",
        "narayanan",
        "Figure 11 (left) regression, LTE downlink, 11 bins 1.05-50.1 Mbit/s",
        "phone on Verizon LTE, UDP iPerf downlink at 1-50 Mbit/s: slope of power vs throughput",
        14.55,
        "nJ/bit",
        lambda: _marginal_nj_per_bit("lte", "down", 1.05, 50.08),
        (("links", "lte"),),
        ("links:lte.alpha_down_mw_per_mbps",),
        "the constant comes from a 2011 phone and LTE modem (Huang et al. 2012); the phone "
        "Narayanan et al. measured spends a fraction of that per extra Mbit/s",
    ),
    Case(
        "LTE uplink, marginal energy",
        "transfer",
        "narayanan",
        "Figure 11 (right) regression, LTE uplink, 6 bins 1.0-24.9 Mbit/s",
        "phone on Verizon LTE, UDP iPerf uplink at 1-25 Mbit/s: slope of power vs throughput",
        80.21,
        "nJ/bit",
        lambda: _marginal_nj_per_bit("lte", "up", 1.02, 24.85),
        (("links", "lte"),),
        ("links:lte.alpha_up_mw_per_mbps",),
        "the constant comes from a 2011 phone (Huang et al. 2012), whose transmit chain spent "
        "several times more per uplink Mbit/s than the phone Narayanan et al. measured",
    ),
    Case(
        "5G low-band downlink, marginal energy",
        "transfer",
        "narayanan",
        "Figure 11 (left) regression, NSA low-band downlink, 5 bins 1.0-100 Mbit/s",
        "phone on Verizon 5G NSA low-band, UDP iPerf downlink: slope of power vs throughput",
        13.52,
        "nJ/bit",
        lambda: _marginal_nj_per_bit("5g", "down", 1.04, 100.45),
        (("links", "5g"),),
        ("links:5g.alpha_down_mw_per_mbps",),
        "derived from this data set",
    ),
    Case(
        "5G low-band uplink, marginal energy",
        "transfer",
        "narayanan",
        "Figure 11 (right) regression, NSA low-band uplink, 5 bins 1.0-39.9 Mbit/s",
        "phone on Verizon 5G NSA low-band, UDP iPerf uplink: slope of power vs throughput",
        29.15,
        "nJ/bit",
        lambda: _marginal_nj_per_bit("5g", "up", 1.02, 39.91),
        (("links", "5g"),),
        ("links:5g.alpha_up_mw_per_mbps",),
        "derived from this data set",
    ),
    Case(
        "5G mmWave downlink, marginal energy",
        "transfer",
        "narayanan",
        "Figure 11 (left) regression, mmWave downlink, 15 bins 1.0-2196 Mbit/s",
        "phone on Verizon 5G NSA mmWave, UDP iPerf downlink: slope of power vs throughput",
        1.81,
        "nJ/bit",
        lambda: _marginal_nj_per_bit("5g-mmwave", "down", 1.03, 2195.8),
        (("links", "5g-mmwave"),),
        ("links:5g-mmwave.alpha_down_mw_per_mbps",),
        "derived from this data set",
    ),
    Case(
        "5G mmWave uplink, marginal energy",
        "transfer",
        "narayanan",
        "Figure 11 (right) regression, mmWave uplink, 11 bins 1.0-190 Mbit/s",
        "phone on Verizon 5G NSA mmWave, UDP iPerf uplink: slope of power vs throughput",
        9.42,
        "nJ/bit",
        lambda: _marginal_nj_per_bit("5g-mmwave", "up", 1.02, 190.09),
        (("links", "5g-mmwave"),),
        ("links:5g-mmwave.alpha_up_mw_per_mbps",),
        "derived from this data set",
    ),
    Case(
        "Wi-Fi download, energy per bit",
        "transfer",
        "aau",
        "parametrized model, row 'Wi-Fi', at 3500 kbit/s (middle of its 2000-5000 range)",
        "phone downloading 500 KB over 802.11b/g at 3.5 Mbit/s, 3-5 m from the AP, whole-phone "
        "energy per bit (model: whole-device, the default boundary: the Wi-Fi radio's power "
        "plus the phone profile's base while it waits on the transfer)",
        _aau_wifi_j_per_bit(3500.0) * 1e6,
        "uJ/bit",
        lambda: model_transfer_device_w("wifi", "phone", "down", 3.5) / 3.5e6 * 1e6,
        (("links", "wifi"), ("devices", "phone")),
        (
            "links:wifi.beta_mw",
            "links:wifi.alpha_down_mw_per_mbps",
            "devices:phone.idle_power_w",
        ),
        "the radio constants come from an 802.11n-era phone (Huang et al. 2012) and the base "
        "is the screen-off ASSUMPTION of a current flagship; the measurement is a 2008-era "
        "handset on 802.11b/g, whose whole-phone draw while downloading was higher",
    ),
    Case(
        "5G vs 4G power",
        "transfer",
        "xu",
        "abstract: '2 - 3x'; the midpoint 2.5 is used",
        "smartphone power on 5G NSA vs 4G LTE while transferring (model: whole-device power, "
        "radio plus the phone profile's base, at each link profile's downlink throughput, "
        "5g / lte)",
        2.5,
        "ratio",
        lambda: (
            model_transfer_device_w("5g", "phone", "down", model_link_mbps("5g", "down"))
            / model_transfer_device_w("lte", "phone", "down", model_link_mbps("lte", "down"))
        ),
        (("links", "5g"), ("links", "lte"), ("devices", "phone")),
        ("links:5g.beta_mw", "links:lte.beta_mw", "devices:phone.idle_power_w"),
        "5g.beta_mw subtracts a whole-phone offset calibrated on LTE (an ASSUMPTION); the "
        "profile is low-band, Xu et al. measured 3.5 GHz mid-band; the source gives a range",
    ),
)

CASES += (
    Case(
        "rpi4 ResNet-18 training, 20 steps",
        "training",
        "embedded-vision",
        "results/blog/rpi4_bench_results.pkl, row 'resnet18' (board 'RPi 4'): t_train = "
        "218.37 s for train_batches = 20",
        _bench_setup("Raspberry Pi 4 B", "ResNet-18", RESNET18_STEP_FLOPS),
        218.366,
        "s",
        lambda: _bench_time_s("rpi4", RESNET18_STEP_FLOPS),
        (("devices", "rpi4"),),
        ("devices:rpi4.train_flops_per_s",),
        _THROUGHPUT_NOTE,
    ),
    Case(
        "rpi4 MobileNetV2 training, 20 steps",
        "training",
        "embedded-vision",
        "results/blog/rpi4_bench_results.pkl, row 'mobilenetv2_100' (board 'RPi 4'): t_train "
        "= 305.47 s for train_batches = 20",
        _bench_setup("Raspberry Pi 4 B", "MobileNetV2 (width 1.0)", MOBILENETV2_STEP_FLOPS),
        305.473,
        "s",
        lambda: _bench_time_s("rpi4", MOBILENETV2_STEP_FLOPS),
        (("devices", "rpi4"),),
        ("devices:rpi4.train_flops_per_s",),
        _THROUGHPUT_NOTE,
    ),
    Case(
        "rpi5 ResNet-18 training, 20 steps",
        "training",
        "embedded-vision",
        "README.md, Raspberry Pi 5 output table, row 0 'resnet18': t_train = 116.85 s for "
        "train_batches = 20",
        _bench_setup("Raspberry Pi 5 (8 GB)", "ResNet-18", RESNET18_STEP_FLOPS),
        116.851,
        "s",
        lambda: _bench_time_s("rpi5", RESNET18_STEP_FLOPS),
        (("devices", "rpi5"),),
        ("devices:rpi5.train_flops_per_s",),
        _THROUGHPUT_NOTE,
    ),
    Case(
        "rpi5 MobileNetV2 training, 20 steps",
        "training",
        "embedded-vision",
        "README.md, Raspberry Pi 5 output table, row 4 'mobilenetv2_100': t_train = 144.35 s "
        "for train_batches = 20",
        _bench_setup("Raspberry Pi 5 (8 GB)", "MobileNetV2 (width 1.0)", MOBILENETV2_STEP_FLOPS),
        144.351,
        "s",
        lambda: _bench_time_s("rpi5", MOBILENETV2_STEP_FLOPS),
        (("devices", "rpi5"),),
        ("devices:rpi5.train_flops_per_s",),
        _THROUGHPUT_NOTE,
    ),
)

# One training step of Tapp et al.'s retinal-segmentation federation: the residual U-Net on a
# site batch of 96 images of 3x256x256, counted by simulations/validation_flops.py
# (tests/test_validate.py recounts). The run: 5 sites trained one after another on one GPU,
# 30 rounds of 10 local epochs each, 16-bit mixed precision (RetSeg/README.md, train.py).
UNET_STEP_FLOPS = 437_322_357_366
RETSEG_BATCH = 96
RETSEG_H100_MIN, RETSEG_V100_MIN = 290.0, 503.0


def _retseg_time_ratio() -> float:
    """Modeled V100 / H100 time of the whole federation. Every site does the same steps on
    either GPU, and each full-batch step costs ``UNET_STEP_FLOPS`` on both, so the run's time
    ratio is one step's (the sites' last, shorter batches, whose sizes the data would fix, move
    it by less than the per-step term does: under 0.1 %)."""
    v100 = model_train_time_s("v100-pcie", UNET_STEP_FLOPS, 1, RETSEG_BATCH)
    h100 = model_train_time_s("gpu-server", UNET_STEP_FLOPS, 1, RETSEG_BATCH)
    return v100 / h100


CASES += (
    Case(
        "whole federation, V100 vs H100 run time",
        "federation",
        "tapp",
        "abstract: retinal segmentation, 'H100 vs. V100 ... 290 vs. 503 minutes' (503 / 290)",
        "complete FedAvg run (5 sites trained in turn on one GPU, 30 rounds x 10 local epochs, "
        "residual U-Net, batch 96 at 3x256x256, 16-bit mixed precision), wall time on a V100 "
        "over the same run on an H100 (model: gpu-server, an H100 PCIe profile, against the "
        "validation-local v100-pcie derived the same way; "
        f"{UNET_STEP_FLOPS / 1e9:.1f} GFLOP a step, simulations/validation_flops.py)",
        RETSEG_V100_MIN / RETSEG_H100_MIN,
        "ratio",
        _retseg_time_ratio,
        (("devices", "gpu-server"), ("devices", "v100-pcie")),
        ("devices:gpu-server.train_flops_per_s", "devices:v100-pcie.train_flops_per_s"),
        "both rates are FP32 peak x 25 %, so the model's run time scales with the FP32 peak "
        "(51 against 14.1 TFLOP/s); the measured run, in 16-bit mixed precision with MONAI "
        "data loading and a validation pass per round on the host, is bound by far more than "
        "the GPU's arithmetic, and its time grows by 1.7x, not 3.6x",
    ),
)

# Kinds the suite is meant to cover; a kind with no case is reported as a gap.
KINDS = {
    "device_power": "device power at idle and under load",
    "training": "on-device training time or energy for a named model",
    "transfer": "transfer energy against throughput (Wi-Fi, LTE, 5G)",
    "federation": "a whole-federation figure from a paper",
}
