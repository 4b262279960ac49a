"""The one MQTT layer of every citywatch process.

- :mod:`mqttlink.client`: the paho client factory (MQTT 5 with persistent session, receive
  maximum; MQTT 3.1.1 fallback), subscription options and SUBACK checks.
- :mod:`mqttlink.threaded`: the cloud services' message source, paho's network thread handing
  over to asyncio (manual acknowledgement after commit).
- :mod:`mqttlink.aio`: the asyncio adapter, paho driven by the event loop (edge uplink, console).
- :mod:`mqttlink.source`: the transport-neutral interface the services consume through.
- :mod:`mqttlink.backoff`: the jittered exponential reconnect backoff.
"""
