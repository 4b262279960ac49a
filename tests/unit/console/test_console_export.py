"""CSV/XLSX formatting and the statistics tables (pure)."""

from __future__ import annotations

import datetime as dt
import io
from zoneinfo import ZoneInfo

import openpyxl
import pytest

from case_bridge.incidence import AreaCount, Incidence, PlaceCount
from console.errors import BadRequest, NotFound
from console.export import Column, Table, csv_cell, sheet_name, to_csv, to_xlsx
from console.geo import wgs84_to_gcj02
from console.stats import (
    daily,
    dates_period,
    export_bytes,
    geojson,
    heat_dots,
    heat_rows,
    period,
    tables,
    trend_points,
    weekly,
)
from console.views import Statistics, StatRow

TZ = ZoneInfo("Asia/Shanghai")
T = Table("by_day", "按日 By day", (Column("day", "日期 Day", "date"), Column("place", "地点 Place"),
                                    Column("cases", "案件 Cases", "int"), Column("rate", "率 Rate", "rate"),
                                    Column("lat", "纬度 Lat", "float")),
          ((dt.date(2026, 3, 2), "=HYPERLINK(\"http://x\")", 3, 0.875, 30.248012),
           (dt.date(2026, 3, 3), "灵隐路, \"下穿\"", 0, None, None), (dt.date(2026, 3, 4), "-1+1", 12, 1.0, -0.5)))


def test_csv_is_excel_friendly_and_safe() -> None:
    raw = to_csv(T)
    assert raw.startswith(b"\xef\xbb\xbf")  # BOM: Excel reads UTF-8 Chinese
    lines = raw[3:].decode("utf-8").split("\r\n")
    assert lines[0] == "日期 Day,地点 Place,案件 Cases,率 Rate,纬度 Lat"
    assert lines[1] == "2026-03-02,\"'=HYPERLINK(\"\"http://x\"\")\",3,0.8750,30.248"  # no formula, quoted
    assert lines[2] == '2026-03-03,"灵隐路, ""下穿""",0,,'
    assert lines[3] == "2026-03-04,'-1+1,12,1.0000,-0.5"  # a negative number stays a number; text does not
    assert lines[4] == ""


@pytest.mark.parametrize(("value", "kind", "text"), [
    (None, "int", ""), (7, "int", "7"), (7.0, "int", "7"), (0.12345, "rate", "0.1235"),
    ("@SUM(A1)", "text", "'@SUM(A1)"),
    ("\tx", "text", "'\tx"), ("ok", "text", "ok"), (dt.date(2026, 1, 5), "date", "2026-01-05"),
])
def test_csv_cells(value: object, kind: str, text: str) -> None:
    assert csv_cell(value, kind) == text  # type: ignore[arg-type]


def test_sheet_names_are_legal_and_unique() -> None:
    taken: set[str] = set()
    assert sheet_name("a/b:c*d?[e]", taken) == "a_b_c_d__e_"
    long = "x" * 40
    assert sheet_name(long, taken) == "x" * 31
    assert sheet_name(long, taken) == "x" * 27 + " (2)"
    assert sheet_name("X" * 40, taken) == "X" * 27 + " (3)"  # unique ignoring case


def test_xlsx_round_trip() -> None:
    raw = to_xlsx([T, T], about=[("开始 From", "2026-03-02")])
    wb = openpyxl.load_workbook(io.BytesIO(raw))
    assert wb.sheetnames == ["说明 About", "按日 By day", "按日 By day (2)"]
    ws = wb["按日 By day"]
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0] == ("日期 Day", "地点 Place", "案件 Cases", "率 Rate", "纬度 Lat")
    assert rows[1] == (dt.datetime(2026, 3, 2), "=HYPERLINK(\"http://x\")", 3, 0.875, 30.248012)
    assert ws.cell(2, 2).data_type == "s"  # text, never a formula
    assert ws.cell(2, 4).number_format == "0.0%" and ws.cell(2, 1).number_format == "yyyy-mm-dd"
    assert rows[2] == (dt.datetime(2026, 3, 3), "灵隐路, \"下穿\"", 0, None, None)
    assert ws.freeze_panes == "A2"


INC = Incidence(0.0, 1.0, [(dt.date(2026, 3, 2), 2), (dt.date(2026, 3, 10), 1)],
                [AreaCount("330106001001", "灵隐-1", 3, 30.248, 120.13), AreaCount("", "", 1, None, None)],
                [AreaCount("lingyin-street", "灵隐街道办事处", 4, 30.248, 120.13)],
                [PlaceCount(30.248, 120.13, 3, "灵隐路下穿 1 号", "330106001001"),
                 PlaceCount(30.2561, 120.1512, 1, "湖滨路 8 号", None)])
ST = Statistics([StatRow("lingyin-street", 4, 2, 2, 1, 0.5, 0.5)], [StatRow("S0111", 4, 2, 2, 1, 0.5, 0.5)],
                {(23, "S0111"): 2, (0, "S0111"): 2}, StatRow("all", 4, 2, 2, 1, 0.5, 0.5))


def test_days_filled_and_weeks_rolled_up() -> None:
    days = daily(INC.by_day, dt.date(2026, 3, 1), dt.date(2026, 3, 10))
    assert len(days) == 10 and days[0] == (dt.date(2026, 3, 1), 0) and days[1] == (dt.date(2026, 3, 2), 2)
    assert weekly(days) == [("2026-W09", dt.date(2026, 2, 23), 0), ("2026-W10", dt.date(2026, 3, 2), 2),
                            ("2026-W11", dt.date(2026, 3, 9), 1)]


def test_period_in_local_days() -> None:
    now = dt.datetime(2026, 3, 10, 9, 0, tzinfo=TZ).timestamp()
    p = period(now, TZ, days=7)
    assert (p.first_day, p.last_day, p.end) == (dt.date(2026, 3, 4), dt.date(2026, 3, 10), now)
    assert p.start == dt.datetime(2026, 3, 4, tzinfo=TZ).timestamp()
    q = dates_period(now, TZ, 30, "2026-03-01", "2026-03-02")
    assert (q.first_day, q.last_day) == (dt.date(2026, 3, 1), dt.date(2026, 3, 2))
    assert q.end - q.start == 2 * 86400
    for bad in (("2026-13-01", ""), ("2026-03-05", "2026-03-01")):
        with pytest.raises(BadRequest):
            dates_period(now, TZ, 30, *bad)
    with pytest.raises(BadRequest):
        period(now, TZ, start=0.0, end=now)  # over two years


def test_tables_geojson_and_exports() -> None:
    p = dates_period(0, TZ, 30, "2026-03-01", "2026-03-10")
    ts = tables(ST, INC, p, {"lingyin-street": "灵隐街道办事处"}, {"S0111": "道路积水"})
    by_id = {t.id: t for t in ts}
    assert list(by_id) == ["by_unit", "by_category", "by_hour", "by_day", "by_week", "by_street", "by_grid", "places"]
    assert by_id["by_unit"].rows == (("lingyin-street", "灵隐街道办事处", 4, 2, 1, 0.5, 2, 0.5, 0),)
    hour = by_id["by_hour"].rows[0]
    assert hour[:3] == ("S0111", "道路积水", 2) and hour[25] == 2 and hour[-1] == 4
    assert len(by_id["by_day"].rows) == 10 and by_id["places"].rows[0][:4] == (1, "灵隐路下穿 1 号", "330106001001", 3)
    assert by_id["by_grid"].rows[1] == ("—", "", 1, None, None)
    gj = geojson(INC)
    assert gj["type"] == "FeatureCollection" and gj["max_cases"] == 3
    kinds = [(f["properties"]["kind"], f["geometry"]["coordinates"], f["properties"]["cases"]) for f in gj["features"]]
    assert kinds == [("place", [120.13, 30.248], 3), ("place", [120.1512, 30.2561], 1),
                     ("grid", [120.13, 30.248], 3)]  # a grid without a code or position is not drawn
    body, name = export_bytes(ts, "by_day", "csv", p, str)
    assert name == "citywatch-by_day-2026-03-01_2026-03-10.csv" and body.count(b"\r\n") == 11
    body, name = export_bytes(ts, "all", "xlsx", p, str)
    assert len(openpyxl.load_workbook(io.BytesIO(body)).sheetnames) == 9
    with pytest.raises(BadRequest):
        export_bytes(ts, "all", "csv", p, str)
    with pytest.raises(NotFound):
        export_bytes(ts, "nope", "xlsx", p, str)


def test_drawing_helpers() -> None:
    assert trend_points([]) == ""
    assert trend_points([0, 2, 1], width=104, height=24, pad=2) == "2.0,22.0 52.0,2.0 102.0,12.0"
    dots = heat_dots(INC)
    assert [d.label for d in dots] == ["湖滨路 8 号 · 1", "灵隐路下穿 1 号 · 3"]  # the hottest drawn last (on top)
    assert dots[1].r > dots[0].r and dots[1].opacity > dots[0].opacity


def test_heat_rows_are_in_the_map_datum() -> None:
    assert heat_rows(INC, gcj02=False)[0] == [30.248, 120.13, 3, "灵隐路下穿 1 号"]
    lat, lon, n, _ = heat_rows(INC, gcj02=True)[0]
    assert n == 3 and [round(lat, 6), round(lon, 6)] == [round(v, 6) for v in wgs84_to_gcj02(30.248, 120.13)]
    assert 0.001 < abs(lat - 30.248) + abs(lon - 120.13) < 0.01  # a Chinese base map's offset, a few hundred metres
