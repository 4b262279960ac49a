"""The gateway process: poll scheduler, outbox on disk, batching, MQTT publish, end-to-end acks, commands.

Data path: ``gateway`` pollers -> :class:`~edge_agent.outbox.Outbox` (SQLite WAL,
``synchronous=FULL``) -> :class:`~edge_agent.uplink.Uplink` (paho-mqtt, MQTT 5) -> broker ->
cloud, whose retained ``.../ack`` watermark is the only thing that deletes outbox rows.
Run it with ``citywatch agent -c gateway.yaml`` (``--check`` validates and plans only).
"""
