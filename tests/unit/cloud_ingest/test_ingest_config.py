"""The shipped example config loads; bad values name file, key and value."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud_ingest.config import IngestSettings, load_settings
from contracts.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]


def test_example_config_loads() -> None:
    mqtt, ingest = load_settings(ROOT / "configs/cloud.example.yaml")
    assert ingest == IngestSettings(**ingest.model_dump())
    assert mqtt.port == 1883 and ingest.share_group == "ingest"
    assert ingest.limits().late_limit_s == 14 * 86400


@pytest.mark.parametrize(
    ("snippet", "key"),
    [
        ("ingest:\n  batch_max_readings: 0\n", "ingest.batch_max_readings"),
        ("ingest:\n  share_group: 'a/b'\n", "ingest.share_group"),
        ("ingest:\n  store_url: mysql://x\n", "ingest.store_url"),
        ("ingest:\n  lingr_ms: 5\n", "ingest.lingr_ms"),
    ],
)
def test_bad_config_names_key(tmp_path: Path, snippet: str, key: str) -> None:
    f = tmp_path / "cloud.yaml"
    f.write_text(snippet)
    with pytest.raises(ConfigError) as err:
        load_settings(f)
    assert err.value.key_path == key and str(f) in str(err.value)
