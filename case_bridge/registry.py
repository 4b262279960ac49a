"""The device registry the bridge builds from gateway birth messages, kept across restarts.

The mapping needs a device's kind, grid, owner, component id and lamp circuit; alarms carry
only the device id, so the bridge remembers what the last birth message said.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from case_bridge.db import PostgresDb, SqliteDb
from contracts.reading import DeviceInfo


class DeviceRegistry:
    """device -> :class:`DeviceInfo` in the case store's database (``CaseStore.devices``)."""

    def __init__(self, db: SqliteDb | PostgresDb) -> None:
        self.db = db

    def remember(self, devices: Sequence[DeviceInfo], now: float) -> None:
        """Keep the registry from birth messages (device -> DeviceInfo) across restarts."""
        with self.db.tx() as tx:
            for d in devices:
                info = orjson.dumps(d.to_json()).decode()
                tx.execute(
                    "INSERT INTO device_registry (device, info, updated_at) VALUES (?, ?, ?) ON CONFLICT (device) "
                    "DO UPDATE SET info = excluded.info, updated_at = excluded.updated_at",
                    (d.id, info, now),
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
