"""Network infrastructure energy (routers, core, access network): two selectable models.

``per-byte`` (the default): an attributional average intensity, bytes x kWh/GB; 0.059 kWh/GB
is Sustainable Web Design v4's operational network figure (as used by CO2.js), configurable
per run. The joules grow with the bytes only.

``power``: the baseline-plus-marginal power model of Malmodin (Electronics Goes Green 2020,
"The power consumption of mobile and fixed network data services", Figure 8), the approach
Mytton, Lundén & Malmodin (J. Industrial Ecology 28(4), 2024) argue for: network equipment
draws a near-constant baseline power per connected user whatever the traffic, plus a small
marginal power per Mbit/s. A call is charged the baseline share of its access network over
the time the call holds the connection (its download, the compute until the upload, the
upload; stand-by time between calls is not allocated, as Malmodin 2020 §6 recommends) plus
the marginal energy of its bytes (W per Mbit/s x Mbit = J). Constants per access class below;
which class a link uses is its ``access`` (data/links.toml; wired and Wi-Fi links: fixed
broadband, cellular: mobile).

Every rule takes scalars or numpy arrays alike (elementwise: the same floats). Pure: numpy only.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from fedenergy.physics.constants import Num

PER_BYTE = "per-byte"
POWER = "power"
MODELS = (PER_BYTE, POWER)
DEFAULT_MODEL = PER_BYTE

INFRA_KWH_PER_GB = 0.059  # Sustainable Web Design v4 operational network intensity (CO2.js)
INFRA_SOURCE = "swd-v4"  # Sustainable Web Design v4 (as used by CO2.js)
POWER_SOURCE = "malmodin-2020"  # Malmodin, Electronics Goes Green 2020, Figure 8
J_PER_KWH = 3.6e6
BYTES_PER_GB = 1e9
J_PER_BYTE_PER_W_PER_MBPS = 8e-6  # 1 W per Mbit/s = 1 J per Mbit = 8e-6 J per byte

# Fixed broadband line (home router + access network + its share of the IP core), Malmodin 2020
# Figure 8 / Figure 7: 18 W per line + 0.05 W/Mbps; the line's baseline is shared by the
# household's users, 3-4 on average (§2.3), 4 in the paper's own worked example (Figure 7:
# "P = 18 / 4 + ..."): 4.5 W per user.
FIXED_LINE_W = 18.0
FIXED_USERS_PER_LINE = 4
FIXED_W_PER_MBPS = 0.05
# Mobile (4G) data: radio access 1 W + 1.5 W/Mbps (Figure 8; §3: "about 1 W for 4G mobile data
# only"; Figure 5 slope "1.5 W/Mbps used here") plus data transmission and IP core
# 0.2 W + 0.03 W/Mbps (§4.5: "Mobile BB (4G) power = 0.2 W + 0.03 W/Mbps").
MOBILE_W = 1.0 + 0.2
MOBILE_W_PER_MBPS = 1.5 + 0.03
ACCESS = ("fixed", "mobile")


class AccessPower(NamedTuple):
    """The power model's constants of one access class: baseline W per user, marginal J/byte."""

    baseline_w: float
    j_per_byte: float


POWER_TERMS = {
    "fixed": AccessPower(
        FIXED_LINE_W / FIXED_USERS_PER_LINE, FIXED_W_PER_MBPS * J_PER_BYTE_PER_W_PER_MBPS
    ),
    "mobile": AccessPower(MOBILE_W, MOBILE_W_PER_MBPS * J_PER_BYTE_PER_W_PER_MBPS),
}


def check_model(name: str) -> str:
    """``name`` when it is an infrastructure model; else a ValueError naming the choices."""
    if name not in MODELS:
        raise ValueError(f"unknown infra-model {name!r}; choose one of {', '.join(MODELS)}")
    return name


def other_model(name: str) -> str:
    """The model a run did not use (every headline figure is also given under it)."""
    return POWER if check_model(name) == PER_BYTE else PER_BYTE


def power_terms(access: str) -> AccessPower:
    """The power model's constants of an access class (``fixed`` or ``mobile``)."""
    if access not in POWER_TERMS:
        raise ValueError(f"unknown access {access!r}; choose one of {', '.join(ACCESS)}")
    return POWER_TERMS[access]


def infrastructure_energy_j(nbytes: Num, kwh_per_gb: Num = INFRA_KWH_PER_GB) -> Num:
    """Per-byte model: joules attributed to ``nbytes`` at ``kwh_per_gb``."""
    return nbytes / BYTES_PER_GB * kwh_per_gb * J_PER_KWH


def power_energy_j(nbytes: Num, seconds: Num, baseline_w: Num, j_per_byte: Num) -> Num:
    """Power model: the baseline share ``baseline_w`` over ``seconds`` plus ``nbytes`` at the
    marginal ``j_per_byte``."""
    return baseline_w * seconds + j_per_byte * nbytes


def call_infra_j(
    model: str,
    kwh_per_gb: float,
    terms: AccessPower | None,
    bytes_down: Num,
    bytes_up: Num,
    held_down_s: Num,
    up_s: Num,
) -> tuple[Num, Num]:
    """Infrastructure joules of a call's download and upload under ``model``. ``held_down_s``:
    the seconds the download phase holds the connection (its transfer, then the compute until
    the upload); ``up_s``: the upload's transfer seconds (the power model reads the seconds and
    ``terms``, of arrays over nodes or scalars; the per-byte model reads ``kwh_per_gb``)."""
    if check_model(model) == POWER:
        base, per_byte = terms
        return (
            power_energy_j(bytes_down, held_down_s, base, per_byte),
            power_energy_j(bytes_up, up_s, base, per_byte),
        )
    return infrastructure_energy_j(bytes_down, kwh_per_gb), infrastructure_energy_j(
        bytes_up, kwh_per_gb
    )


def calls_infra_j(
    model: str,
    kwh_per_gb: float,
    terms: AccessPower,
    bytes_down: np.ndarray,
    bytes_up: np.ndarray,
    down_s: np.ndarray,
    compute_s: np.ndarray,
    up_s: np.ndarray,
) -> float:
    """Total infrastructure joules of many calls (arrays, one entry per call: bytes, transfer
    and compute seconds; ``terms`` of arrays) under ``model``, with the call model's phases
    (the download holds the connection until the upload). Recomputes a ledger's
    infrastructure under the model its run did not use."""
    held = down_s + np.maximum(compute_s, 0.0)
    down, up = call_infra_j(model, kwh_per_gb, terms, bytes_down, bytes_up, held, up_s)
    return float(np.sum(down) + np.sum(up))


def provenance(model: str, kwh_per_gb: float, access: str | None = None) -> str:
    """The source tag of an infrastructure component: the model and its constants."""
    if model == POWER:
        t = power_terms(access or "fixed")
        return f"{POWER_SOURCE}:power:{access}:{t.baseline_w:g}W+{t.j_per_byte:g}J/B"
    return f"{INFRA_SOURCE}:{kwh_per_gb:g}kWh/GB"
