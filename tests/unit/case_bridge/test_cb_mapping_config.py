"""Category table, units, alarm -> case mapping, and the config error messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from case_bridge.config import (
    DEFAULT_CATEGORIES,
    CaseKind,
    CasesSettings,
    NotifySettings,
    Urgency,
    load_cases_settings,
    load_catalog,
)
from case_bridge.deadlines import Basis
from case_bridge.errors import UnknownCategory
from case_bridge.mapping import component_category, map_alarm, match_rule, responsible_unit
from contracts.errors import ConfigError
from contracts.reading import DeviceInfo
from tests.support.cases import COVER_GAS, COVER_UNKNOWN, COVER_WATER, GAUGE, LAMP_A, alarm

CAT = load_catalog()


def test_default_table_has_the_sourced_codes() -> None:
    comp = {c.code: c.name for c in CAT.table.categories if c.kind is CaseKind.COMPONENT}
    assert [f"01{i:02d}" for i in range(1, 15)] == [k for k in comp if k <= "0114"]
    assert comp["0111"] == "燃气井盖" and comp["0118"] == "路灯"
    assert {"0205", "0206", "0207", "0208"} <= set(comp)
    assert CAT.category("S0111").name == "道路积水"
    overload = CAT.category("S9901")
    assert overload.local and overload.kind is CaseKind.EVENT
    assert CAT.category("S0111").limits_for(Urgency.NORMAL).handle_h == 4
    assert CAT.category("S0111").limits_for(Urgency.NORMAL).basis is Basis.WORKING
    with pytest.raises(UnknownCategory):
        CAT.category("0111")  # bare codes overlap; a service code is required


def test_component_ids() -> None:
    assert component_category(CAT, "3301060111000002") == CAT.category("B0111")
    assert component_category(CAT, "330106011100000") is None  # 15 digits
    assert component_category(CAT, "3301069999000002") is None  # unknown minor code
    assert component_category(CAT, None) is None


def test_responsibility_chains() -> None:
    cover = CAT.category("B0101")
    # component: owner from the device, else the category's owner, else locality
    assert responsible_unit(CAT, cover, "gas", "330106001001") == "gas"
    assert responsible_unit(CAT, cover, None, "330106001001") == "water-supply"
    assert responsible_unit(CAT, CAT.category("B0114"), None, "330106001001") == "lingyin-street"
    assert responsible_unit(CAT, cover, "no-such-unit", None) == "water-supply"
    # event: grid -> street -> district -> agency
    water = CAT.category("S0111")
    assert responsible_unit(CAT, water, "gas", "330102001001") == "hubin-street"
    assert responsible_unit(CAT, water, None, "330106900001") == "xihu"  # grid without a street office
    assert responsible_unit(CAT, water, None, "unknown-grid") == "xihu"  # default district


def test_map_alarm() -> None:
    d = map_alarm(CAT, alarm("wl-0001", "road-water-depth", severity="critical"), GAUGE)
    assert d is not None and d.category.service_code == "S0111" and d.auto_dispatch and d.auto_close
    assert d.urgency is Urgency.VERY_URGENT and d.unit == "lingyin-street"
    assert d.corr_key == "device:wl-0001:road-water-depth" and d.lat == GAUGE.lat
    minor = map_alarm(CAT, alarm("wl-0001", "road-water-depth", severity="minor"), GAUGE)
    assert minor is not None and not minor.auto_dispatch
    assert map_alarm(CAT, alarm("wl-0001", "road-water-rising"), GAUGE) is None
    assert map_alarm(CAT, alarm("wl-0001", "device-offline"), GAUGE) is None
    gas = map_alarm(CAT, alarm("mh-0002", "manhole-cover-open"), COVER_GAS)
    assert gas is not None and gas.category.service_code == "B0111" and gas.unit == "gas"
    unknown = map_alarm(CAT, alarm("mh-0003", "manhole-tilt"), COVER_UNKNOWN)
    assert unknown is not None and unknown.category.service_code == "B0114" and unknown.unit == "hubin-street"
    water = map_alarm(CAT, alarm("mh-0001", "manhole-tilt"), COVER_WATER)
    assert water is not None and water.unit == "water-supply"
    lamp = map_alarm(CAT, alarm("lamp-0001", "lampFailure"), LAMP_A)
    assert lamp is not None and lamp.corr_key == "circuit:c-7"
    wim = map_alarm(CAT, alarm("wim-1", "wim-overload", severity="critical"), DeviceInfo("wim-1", "wim", "wim"))
    assert wim is not None and wim.urgency is Urgency.URGENT and wim.unit == "transport-enforcement"


def test_unknown_device_matches_only_explicit_rule_names() -> None:
    assert match_rule(CAT, "road-water-depth", None) is not None
    assert match_rule(CAT, "lampFailure", None) is None  # the lamp rule is a bare "*"
    d = map_alarm(CAT, alarm("wl-9", "road-water-depth", severity="critical"), None)
    assert d is not None and d.unit == "xihu"


def write(tmp: Path, name: str, text: str) -> Path:
    p = tmp / name
    p.write_text(text, encoding="utf-8")
    return p


def test_config_errors_name_file_key_and_value(tmp_path: Path) -> None:
    text = DEFAULT_CATEGORIES.read_text(encoding="utf-8").replace("handle_h: 36", "handle_h: -1", 1)
    bad = write(tmp_path, "categories.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_catalog(bad)
    assert str(bad) in str(err.value) and "handle_h" in err.value.key_path and err.value.value == -1
    text = DEFAULT_CATEGORIES.read_text(encoding="utf-8").replace("category: S0111", "category: S0112", 1)
    with pytest.raises(ConfigError, match="unknown service code 'S0112'"):
        load_catalog(write(tmp_path, "c2.yaml", text))
    units = write(tmp_path, "units.yaml", "fallback_unit: nobody\nunits:\n  - {id: a, name: A, kind: center}\n")
    with pytest.raises(ConfigError, match="unknown unit 'nobody'"):
        load_catalog(DEFAULT_CATEGORIES, units)
    cloud = write(tmp_path, "cloud.yaml", "cases:\n  verify_hold_s: 600\n  verfy_grace_s: 3\n")
    with pytest.raises(ConfigError) as err2:
        load_cases_settings(cloud)
    assert err2.value.key_path == "cases.verfy_grace_s" and "unknown key" in str(err2.value)
    with pytest.raises(ValueError, match="unknown notify target"):
        NotifySettings.model_validate({"primary": ["ghost"]})
    with pytest.raises(ValueError, match="email target needs"):
        NotifySettings.model_validate({"targets": [{"name": "m", "type": "email"}]})
    assert CasesSettings().store_url.startswith("sqlite:///")


def test_cloud_example_sections_validate(capsys: pytest.CaptureFixture[str]) -> None:
    from case_bridge.cli import args_cases, cmd_cases
    from case_bridge.config import REPO_ROOT, load_notify_settings

    cfg = REPO_ROOT / "configs" / "cloud.example.yaml"
    settings = load_cases_settings(cfg)
    assert settings.mqtt is not None and settings.mqtt.username == "cw-cases"
    notify = load_notify_settings(cfg)
    assert {t.type.value for t in notify.targets} == {"dingtalk", "wecom", "webhook", "email"}
    import argparse

    parser = argparse.ArgumentParser()
    args_cases(parser)
    assert cmd_cases(parser.parse_args(["-c", str(cfg), "--check"])) == 0
    assert "21 categories" in capsys.readouterr().out


def test_an_agency_first_event_goes_to_its_agency_before_the_street() -> None:
    from case_bridge.config import load_catalog
    from case_bridge.mapping import responsible_unit

    catalog = load_catalog()
    overload = catalog.category("S9901")
    water = catalog.category("S0111")
    grid = GAUGE.grid
    assert responsible_unit(catalog, overload, None, grid) == "transport-enforcement"
    assert responsible_unit(catalog, water, None, grid) != water.agency_unit  # road water stays local first
