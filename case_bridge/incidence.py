"""Where and when cases are reported: counts per local day, grid, street and place (高发时段/高发地点).

The rate statistics (及时解决率, 结案率, by unit and category) are :meth:`CaseStore.statistics`;
this adds the incidence views a map and a trend line need. It counts the same cases
(reported in the period, rejected and cancelled left out) and buckets days in the city's
calendar (``catalog.calendar.utc_offset_s``), so both agree on which day a case belongs to.
A *place* is a cell of ``10**-place_decimals`` degrees (3 decimals: ~100 m) with its cases'
mean position and one of their addresses.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from case_bridge.store import CaseStore

#: cases the statistics count: what was reported and not thrown out (same rule as ``CaseStore.statistics``)
COUNTED = "created_at >= ? AND created_at < ? AND state NOT IN ('rejected', 'cancelled')"


@dataclass(frozen=True, slots=True)
class AreaCount:
    key: str  # grid code or street unit id ("" when the case has none)
    name: str
    cases: int
    lat: float | None  # mean position of its cases (a point to draw where no polygon is known)
    lon: float | None


@dataclass(frozen=True, slots=True)
class PlaceCount:
    lat: float
    lon: float
    cases: int
    address: str
    grid: str | None


@dataclass(frozen=True, slots=True)
class Incidence:
    since: float
    until: float
    by_day: list[tuple[dt.date, int]]  # local calendar day, cases reported; days without cases left out
    by_grid: list[AreaCount]  # most cases first
    by_street: list[AreaCount]
    places: list[PlaceCount]  # most cases first, at most ``max_places``


def incidence(store: CaseStore, since: float, until: float, *, place_decimals: int = 3,
              max_places: int = 500) -> Incidence:
    """Counts per local day, grid, street and place for cases reported in [since, until)."""
    if not 0 <= place_decimals <= 6:
        raise ValueError("place_decimals must be 0-6")
    off = store.catalog.calendar.utc_offset_s
    scale = 10.0 ** place_decimals
    src = "cases" if store.dialect == "postgresql" else "cases INDEXED BY cases_created"
    day = ("CAST(FLOOR((created_at + ?) / 86400.0) AS BIGINT)" if store.dialect == "postgresql"
           else "CAST((created_at + ?) / 86400 AS INTEGER)")
    params = [since, until]
    with store.db.read() as tx:
        days = tx.execute(f"SELECT {day} AS d, COUNT(*) FROM {src} WHERE {COUNTED} GROUP BY d ORDER BY d",
                          [off, *params])
        grids = tx.execute(f"SELECT grid, COUNT(*), AVG(lat), AVG(lon) FROM {src} WHERE {COUNTED} GROUP BY grid",
                           params)
        streets = tx.execute(f"SELECT street, COUNT(*), AVG(lat), AVG(lon) FROM {src} WHERE {COUNTED} "
                             "GROUP BY street", params)
        places = tx.execute(
            f"SELECT CAST(ROUND(lat * ?) AS BIGINT) AS la, CAST(ROUND(lon * ?) AS BIGINT) AS lo, COUNT(*), "
            f"AVG(lat), AVG(lon), MIN(address), MIN(grid) FROM {src} "
            f"WHERE {COUNTED} AND lat IS NOT NULL AND lon IS NOT NULL "
            "GROUP BY la, lo ORDER BY COUNT(*) DESC, la, lo LIMIT ?",
            [scale, scale, *params, max_places])
    epoch = dt.date(1970, 1, 1)
    grid_names = {code: g.name or code for code, g in store.catalog.units.grids.items()}
    unit_names = {u.id: u.name for u in store.units()}

    def areas(rows: list[tuple[object, ...]], names: dict[str, str]) -> list[AreaCount]:
        out = [AreaCount(str(k or ""), names.get(str(k or ""), str(k or "")), int(str(n)),
                         None if la is None else float(str(la)), None if lo is None else float(str(lo)))
               for k, n, la, lo in rows]
        return sorted(out, key=lambda a: (-a.cases, a.key))

    return Incidence(
        since, until,
        [(epoch + dt.timedelta(days=int(d)), int(n)) for d, n in days],
        areas(grids, grid_names), areas(streets, unit_names),
        [PlaceCount(round(float(la), 6), round(float(lo), 6), int(n), str(addr or ""), None if g is None else str(g))
         for _la, _lo, n, la, lo, addr, g in places],
    )
