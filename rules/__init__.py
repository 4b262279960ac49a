"""The rule engine: YAML rule specs, pure evaluation, the alarm lifecycle, backtests.

Public API (see each module):

* ``rules.specs.load_rules(paths) -> list[Rule]`` / ``parse_rules(text, source)``
* ``rules.evaluate.evaluate(RuleSet(rules), state, inputs, now) -> (state, transitions)`` with
  ``EngineState`` (JSON-able) and inputs ``Reading | Event | GatewayStatus | AlarmAck | OpenCases``
* ``rules.backtest.backtest(rules, History, case_policy=None, progress=None) -> BacktestReport``;
  ``rules.backtest.default_case_policy`` is the ``CasePolicy`` (transitions, registry -> cases per
  rule) used when the case bridge gives none; ``rules.history.load_history`` reads readings, events
  and the registry from the ingest store
* ``rules.store.open_alarm_store(url) -> AlarmStore`` (``list``, ``get``, ``transitions``) for readers
* ``rules.sun.sun_times(lat, lon, date)`` / ``sun_is_up(lat, lon, t, margin_s)``
* ``rules.lifecycle.alarm_id_for(device, rule, raised_t)``
"""
