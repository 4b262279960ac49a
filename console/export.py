"""Tables as CSV and XLSX downloads (pure: a table in, bytes out).

CSV is UTF-8 with a byte-order mark (Excel otherwise reads Chinese as mojibake) and CRLF
line ends (RFC 4180). Text cells that a spreadsheet would run as a formula (leading ``=``,
``+``, ``-``, ``@``, tab or CR: OWASP "CSV injection") get a leading apostrophe; addresses
and descriptions come from citizens. XLSX is written by xlsxwriter, one sheet per table,
text always as text (never a formula), rates as percentages, dates as dates.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import xlsxwriter

Kind = Literal["text", "int", "float", "rate", "date"]
Cell = str | int | float | dt.date | None
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    title: str  # 中文 English
    kind: Kind = "text"


@dataclass(frozen=True, slots=True)
class Table:
    id: str  # file and sheet name: [a-z_]+
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Cell, ...], ...]


def _safe_text(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_cell(value: Cell, kind: Kind) -> str:
    if value is None:
        return ""
    if kind == "date" and isinstance(value, dt.date):
        return value.isoformat()
    if kind == "rate" and isinstance(value, int | float):
        return f"{value:.4f}"
    if kind == "float" and isinstance(value, int | float):
        return f"{value:.6g}"
    if kind == "int" and isinstance(value, int | float):
        return str(int(value))
    return _safe_text(str(value))


def to_csv(table: Table) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([c.title for c in table.columns])
    for row in table.rows:
        w.writerow([csv_cell(v, c.kind) for v, c in zip(row, table.columns, strict=True)])
    return b"\xef\xbb\xbf" + buf.getvalue().encode("utf-8")


def sheet_name(title: str, taken: set[str]) -> str:
    """Excel sheet names: at most 31 characters, none of ``[]:*?/\\``, unique ignoring case."""
    base = re.sub(r"[\[\]:*?/\\]", "_", title).strip("'")[:31] or "sheet"
    name, n = base, 2
    while name.lower() in taken:
        suffix = f" ({n})"
        name, n = base[: 31 - len(suffix)] + suffix, n + 1
    taken.add(name.lower())
    return name


def to_xlsx(tables: Sequence[Table], about: Sequence[tuple[str, str]] = ()) -> bytes:
    """One workbook: an optional ``about`` sheet (label, value pairs), then one sheet per table."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False,
                                   "strings_to_numbers": False})
    head = wb.add_format({"bold": True, "bg_color": "#E8EEF7", "border": 1})
    fmt = {"rate": wb.add_format({"num_format": "0.0%"}), "date": wb.add_format({"num_format": "yyyy-mm-dd"}),
           "float": wb.add_format({"num_format": "0.000000"}), "int": wb.add_format({"num_format": "0"})}
    taken: set[str] = set()
    if about:
        ws = wb.add_worksheet(sheet_name("说明 About", taken))
        for r, (label, text) in enumerate(about):
            ws.write_string(r, 0, label, head)
            ws.write_string(r, 1, text)
        ws.set_column(0, 0, 18)
        ws.set_column(1, 1, 60)
    for table in tables:
        ws = wb.add_worksheet(sheet_name(table.title, taken))
        for c, col in enumerate(table.columns):
            ws.write_string(0, c, col.title, head)
            width = max([len(col.title) + 2, *(len(str(line[c])) + 2 for line in table.rows[:200])])
            ws.set_column(c, c, min(50, width))
        for r, row in enumerate(table.rows, start=1):
            for c, (value, col) in enumerate(zip(row, table.columns, strict=True)):
                if value is None:
                    continue
                if col.kind == "date" and isinstance(value, dt.date):
                    ws.write_datetime(r, c, dt.datetime(value.year, value.month, value.day), fmt["date"])
                elif col.kind != "text" and isinstance(value, int | float):
                    ws.write_number(r, c, value, fmt[col.kind])
                else:
                    ws.write_string(r, c, str(value))
        ws.freeze_panes(1, 0)
        if table.rows:
            ws.autofilter(0, 0, len(table.rows), len(table.columns) - 1)
    wb.close()
    return buf.getvalue()
