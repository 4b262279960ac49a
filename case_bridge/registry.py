"""The device registry the bridge builds from gateway birth messages, kept across restarts.

The mapping needs a device's kind, grid, owner, component id and lamp circuit; alarms carry
only the device id, so the bridge remembers what the last birth message said.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from case_bridge.db import PostgresDb, SqliteDb
from contracts.reading import DeviceInfo

#: devices per upsert statement (3 parameters each: far below SQLite's 32 766 and PostgreSQL's 65 535)
ROWS_PER_STATEMENT = 500


class DeviceRegistry:
    """device -> :class:`DeviceInfo` in the case store's database (``CaseStore.devices``)."""

    def __init__(self, db: SqliteDb | PostgresDb) -> None:
        self.db = db

    def remember(self, devices: Sequence[DeviceInfo], now: float) -> None:
        """Keep the registry from birth messages (device -> DeviceInfo) across restarts.

        Multi-row upserts of :data:`ROWS_PER_STATEMENT`: a city's cold start is a thousand births of a
        thousand devices, and one statement per device kept the bridge busy for minutes (1 M devices).
        A repeated id keeps its last entry, as one upsert after another did (PostgreSQL refuses a
        statement that updates a row twice).
        """
        last = {d.id: d for d in devices}
        rows = [(d.id, orjson.dumps(d.to_json()).decode(), now) for d in last.values()]
        with self.db.tx() as tx:
            for i in range(0, len(rows), ROWS_PER_STATEMENT):
                chunk = rows[i : i + ROWS_PER_STATEMENT]
                tx.write(
                    "INSERT INTO device_registry (device, info, updated_at) VALUES "
                    + ", ".join(["(?, ?, ?)"] * len(chunk))
                    + " ON CONFLICT (device) DO UPDATE SET info = excluded.info, updated_at = excluded.updated_at",
                    [v for row in chunk for v in row],
                )

    def known(self) -> dict[str, DeviceInfo]:
        with self.db.read() as tx:
            rows = tx.execute("SELECT device, info FROM device_registry")
        out: dict[str, DeviceInfo] = {}
        for dev, info in rows:
            j = orjson.loads(info)
            out[dev] = DeviceInfo(
                id=j["id"], profile=j.get("profile", ""), kind=j.get("kind", ""), lat=j.get("lat"), lon=j.get("lon"),
                grid=j.get("grid"), component_id=j.get("component_id"), owner=j.get("owner"),
                circuit=j.get("circuit"), tags=tuple(j.get("tags", ())), interval_s=j.get("interval_s"),
            )
        return out
