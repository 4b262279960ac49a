"""The field side of citywatch: device profiles, read planning, Modbus RTU/TCP I/O, decoding.

Entry points for other packages:

* ``gateway.profiles.get(name)`` / ``all_profiles()`` — register maps as data (``gateway.registers``)
* ``gateway.config`` — ``BusConfig``, ``DeviceConfig``, ``FieldConfig``, ``load_field_config``
* ``gateway.poller`` — ``DevicePoller``, ``build_pollers`` (what the edge agent runs)
* ``gateway.plan`` / ``gateway.budget`` — read planning and the RS-485 bus-time budget (pure)
* ``gateway.cli`` — ``citywatch plan``, ``probe``, ``scan``

No MQTT here: the gateway turns registers into ``contracts.reading`` values and stops there.
"""
