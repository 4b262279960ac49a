"""Incidence by day, grid, street and place over both case-store backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from cases_support import pg_store, sqlite_store

from case_bridge.incidence import incidence
from case_bridge.store import CaseStore

pytestmark = pytest.mark.integration
# 2026-03-02 15:30 UTC = 23:30 in the city (UTC+8, configs/categories.yaml): the next local day starts at 16:00 UTC
T = dt.datetime(2026, 3, 2, 15, 30, tzinfo=dt.UTC).timestamp()


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CaseStore]:
    if request.param == "sqlite":
        with sqlite_store(tmp_path) as s:
            yield s
    else:
        with pg_store(request.getfixturevalue("pg_dsn")) as s:
            yield s


def test_incidence(store: CaseStore) -> None:
    underpass = (30.24801, 120.13002)  # three reports within a few metres: one place
    for i, dt_s in enumerate((0, 45 * 60, 86400)):
        store.create_reported("S0111", f"积水 {i}", underpass[0] + 0.00001 * i, underpass[1], "灵隐路下穿 1 号",
                              grid="330106001001", now=T + dt_s)
    store.create_reported("B0118", "路灯不亮", 30.2561, 120.1512, "湖滨路 8 号", grid="330102001001", now=T + 8 * 86400)
    store.create_reported("S0111", "no position", grid="330106001002", now=T + 600)
    thrown_out = store.create_reported("S0111", "duplicate", 30.2561, 120.1512, grid="330102001001", now=T + 700)
    store.transition(thrown_out.id, "reject", "sup", now=T + 800)
    store.create_reported("S0111", "before the period", 30.2, 120.1, grid="330106001001", now=T - 86400)

    inc = incidence(store, T - 60, T + 10 * 86400)
    # local times: 23:30 and 23:40 on 03-02; 00:15 and 23:30 on 03-03; 23:30 on 03-10 (the rejected one not counted)
    assert inc.by_day == [(dt.date(2026, 3, 2), 2), (dt.date(2026, 3, 3), 2), (dt.date(2026, 3, 10), 1)]
    grids = {a.key: (a.name, a.cases) for a in inc.by_grid}
    assert grids == {"330106001001": ("灵隐-1", 3), "330102001001": ("湖滨-1", 1), "330106001002": ("灵隐-2", 1)}
    assert inc.by_grid[0].key == "330106001001" and inc.by_grid[0].lat == pytest.approx(underpass[0], abs=1e-4)
    assert [(a.key, a.name, a.cases) for a in inc.by_street] == [
        ("lingyin-street", "灵隐街道办事处", 4), ("hubin-street", "湖滨街道办事处", 1)]
    assert [(p.cases, p.address, p.grid) for p in inc.places] == [
        (3, "灵隐路下穿 1 号", "330106001001"), (1, "湖滨路 8 号", "330102001001")]
    assert inc.places[0].lat == pytest.approx(underpass[0], abs=1e-4) and inc.places[1].lon == 120.1512
    assert incidence(store, T + 20 * 86400, T + 21 * 86400).places == []
    with pytest.raises(ValueError):
        incidence(store, T, T + 1, place_decimals=9)
