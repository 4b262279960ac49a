"""cloud_ingest: MQTT telemetry into a time-series store, validated, deduplicated, commit-then-ack.

Modules:

- :mod:`cloud_ingest.store` — the store interface (``base.Store``) and its SQLite (default),
  PostgreSQL/TimescaleDB and InfluxDB 2 backends; ``open_store(url)``.
- :mod:`cloud_ingest.validate` — pure ``classify(topic, payload, now, limits)``: accepted or a
  dead letter with its reason; :mod:`cloud_ingest.fastdecode` — the telemetry hot path.
- :mod:`cloud_ingest.watermark` — pure ack watermark and seq-gap bookkeeping.
- :mod:`cloud_ingest.service` — the ingester (paho thread -> asyncio loop -> micro-batches ->
  store -> PUBACK -> retained ack watermark); :mod:`cloud_ingest.cli` — ``citywatch ingest``.
"""
