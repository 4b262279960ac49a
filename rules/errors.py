"""Errors of the rule engine.

    CitywatchError
    └── RulesError             anything the rule engine raises on purpose
        ├── RuleSpecError      a rule file is invalid (also a ConfigError for the CLI: names file/key/value)
        ├── AlarmStoreError    the alarm/state store failed (sqlite3/psycopg errors translated once)
        └── HistoryError       the backtest could not read stored history
"""

from __future__ import annotations

from contracts.errors import CitywatchError


class RulesError(CitywatchError):
    """Root of the rule engine's errors."""


class RuleSpecError(RulesError):
    """A rule file is invalid in a way pydantic cannot see (duplicate names across files...)."""


class AlarmStoreError(RulesError):
    """The alarm and rule-state store failed; the message names the operation."""


class HistoryError(RulesError):
    """Stored history could not be read for a backtest."""
