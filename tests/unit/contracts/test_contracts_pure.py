"""contracts/ is the pure wire contract every package shares: no I/O library may creep back in."""

from __future__ import annotations

import ast
from pathlib import Path

import contracts

IO_MODULES = {"paho", "socket", "ssl", "asyncio", "sqlite3", "psycopg", "httpx", "amqtt", "aiomqtt", "mqttlink",
              "subprocess", "threading", "serial", "nats"}


def test_contracts_import_no_io_library() -> None:
    root = Path(contracts.__file__).parent
    found = []
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in IO_MODULES]
    assert not found, found
