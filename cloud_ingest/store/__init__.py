"""Time-series stores behind one interface (:mod:`cloud_ingest.store.base`).

``open_store(url)`` picks the backend from the URL scheme; backends import their driver
lazily, so an SQLite-only deployment never imports psycopg or influxdb-client.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from cloud_ingest.errors import StoreError
from cloud_ingest.store.base import (
    DeadLetter,
    DeadLetterIn,
    DeviceState,
    Gap,
    GatewayState,
    Point,
    ReadingChunk,
    SeqMark,
    StatusUpdate,
    Store,
    WriteBatch,
    WriteResult,
)

DEFAULT_URL = "sqlite:///data/citywatch.db"

__all__ = [
    "DEFAULT_URL",
    "DeadLetter",
    "DeadLetterIn",
    "DeviceState",
    "Gap",
    "GatewayState",
    "Point",
    "ReadingChunk",
    "SeqMark",
    "StatusUpdate",
    "Store",
    "WriteBatch",
    "WriteResult",
    "open_store",
]


def open_store(url: str = DEFAULT_URL) -> Store:
    """Open (and create the schema of) the store named by ``url``.

    ``sqlite:///relative/path.db``, ``sqlite:////abs/path.db``, ``sqlite:///:memory:``;
    ``postgresql://user:pw@host:port/db`` (also ``postgres://``);
    ``influxdb://token@host:port/org/bucket`` (InfluxDB 2, ``influxdbs://`` for TLS);
    ``influxdb1://[user:pw@]host:port/db`` (InfluxDB 1.x, ``influxdb1s://`` for TLS).
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from cloud_ingest.store.sqlite import SqliteStore

        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise StoreError(f"bad SQLite URL {url!r}: expected sqlite:///path/to/file.db")
        return SqliteStore(path, url)
    if scheme in ("postgresql", "postgres"):
        from cloud_ingest.store.postgres import PostgresStore

        return PostgresStore(url)
    if scheme in ("influxdb1", "influxdb1s"):
        from cloud_ingest.store.influx1 import Influx1Store

        return Influx1Store(url)
    if scheme in ("influxdb", "influxdbs"):
        from cloud_ingest.store.influx import InfluxStore

        return InfluxStore(url)
    raise StoreError(f"unknown store URL scheme {scheme!r} in {url!r}: use sqlite://, postgresql://, influxdb:// or influxdb1://")
