import pytest

from fedenergy.sim.fleet import load_fleet, parse_fleet


def test_named_fleet_loads_and_assignment_is_deterministic():
    fleet = load_fleet("mixed")
    a = [(p.device.id, p.link.id) for p in fleet.assign(50, seed=1)]
    b = [(p.device.id, p.link.id) for p in fleet.assign(50, seed=1)]
    c = [(p.device.id, p.link.id) for p in fleet.assign(50, seed=2)]
    assert a == b and a != c
    assert sorted(a) == sorted(c)  # same mix, different placement
    sizes = fleet.group_sizes(50)
    assert sum(sizes) == 50
    assert sizes == [round(g.fraction * 50) for g in fleet.groups]


def test_group_sizes_round_by_largest_remainder():
    fleet = parse_fleet(
        {
            "group": [
                {"device": "phone", "link": "lte", "fraction": 1 / 3},
                {"device": "rpi4", "link": "wifi", "fraction": 1 / 3},
                {"device": "laptop", "link": "ethernet", "fraction": 1 / 3},
            ]
        },
        "t",
    )
    assert fleet.group_sizes(10) == [4, 3, 3] or sorted(fleet.group_sizes(10)) == [3, 3, 4]
    assert sum(fleet.group_sizes(7)) == 7


@pytest.mark.parametrize(
    "data,message",
    [
        (
            {"group": [{"device": "toaster", "link": "lte", "fraction": 1.0}]},
            "unknown device 'toaster'",
        ),
        (
            {"group": [{"device": "phone", "link": "smoke", "fraction": 1.0}]},
            "unknown link 'smoke'",
        ),
        ({"group": [{"device": "phone", "link": "lte", "fraction": 0.5}]}, "sum to 0.5, not 1"),
        ({"group": [{"device": "phone", "link": "lte", "fraction": 1.5}]}, "fraction must be"),
        ({"group": [{"device": "phone", "link": "lte", "fraction": "1"}]}, "fraction must be"),
        ({"group": [{"device": "phone", "link": "lte"}]}, "missing key"),
        (
            {"group": [{"device": "phone", "link": "lte", "fraction": 1.0, "colour": "red"}]},
            "unknown key",
        ),
        ({"groups": []}, "unknown key"),
        ({}, "at least one"),
    ],
)
def test_bad_fleets_are_refused_with_the_problem_named(data, message):
    with pytest.raises(ValueError, match=message):
        parse_fleet(data, "t")


def test_malformed_toml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[group]\ndevice = ")
    with pytest.raises(ValueError, match="malformed TOML"):
        load_fleet(str(bad))
    with pytest.raises(ValueError, match="does not exist"):
        load_fleet(str(tmp_path / "nope.toml"))
    with pytest.raises(ValueError, match="unknown fleet 'nope'.*mixed"):
        load_fleet("nope")


def test_optional_group_keys_default_and_validate():
    fleet = parse_fleet({"group": [{"device": "phone", "link": "lte", "fraction": 1.0}]}, "t")
    g = fleet.groups[0]
    assert (g.country, g.availability, g.failure_prob) == ("WORLD", 1.0, 0.0)
    fleet = parse_fleet(
        {
            "group": [
                {
                    "device": "phone",
                    "link": "lte",
                    "fraction": 1.0,
                    "country": "fra",
                    "availability": 0.5,
                    "failure_prob": 0.1,
                }
            ]
        },
        "t",
    )
    node = fleet.assign(3, seed=0)[0]
    assert (node.country, node.availability, node.failure_prob) == ("FRA", 0.5, 0.1)
    for key, bad in (
        ("availability", 0.0),
        ("availability", 1.5),
        ("failure_prob", 1.0),
        ("failure_prob", -0.1),
        ("country", 3),
    ):
        with pytest.raises(ValueError, match=key):
            parse_fleet(
                {"group": [{"device": "phone", "link": "lte", "fraction": 1.0, key: bad}]}, "t"
            )
