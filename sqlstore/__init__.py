"""One SQL layer for the ingest, rules and case stores: dialect helpers and versioned migrations."""

from sqlstore.dialect import Dialect, dialect_of, pg_placeholders, render
from sqlstore.migrate import (
    CREATE_VERSION_TABLE,
    Migration,
    PyStep,
    SchemaError,
    Sql,
    SqlStoreError,
    Step,
    Variant,
    applied_versions,
    mark_applied,
    migrate,
    plan,
    resolve,
)
from sqlstore.sqlite import connect_sqlite

__all__ = [
    "CREATE_VERSION_TABLE",
    "Dialect",
    "Migration",
    "PyStep",
    "SchemaError",
    "Sql",
    "SqlStoreError",
    "Step",
    "Variant",
    "applied_versions",
    "connect_sqlite",
    "dialect_of",
    "mark_applied",
    "migrate",
    "pg_placeholders",
    "plan",
    "render",
    "resolve",
]
