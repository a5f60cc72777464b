"""Hostile exports: the importers refuse nonsense (or warn about it) instead of exit 0.

Dates guessed cell by cell, contradicting outcomes, future sessions with outcomes, header-only
files, rows with blank keys taken for blank rows, mixed UTC offsets and out-of-range years,
GBK / BOM encodings. Every file is tiny and hand-built in ``tmp_path``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract import ContractError, validate
from features.importers.chanmama import import_chanmama
from features.importers.generic import import_table
from features.importers.ns_homeshopping import build_ns_dataset, import_ns_homeshopping
from features.importers.transactions import import_transactions

TZ = "Asia/Shanghai"
SESSION_HEADER = "session_id,room_id,platform,host_id,start_time,planned_duration_min,session_type"
OUTCOME_HEADER = SESSION_HEADER + ",viewers,orders,buyers,gmv"
CHANMAMA_HEADER = "Name,Start_time,Duration,Views,Total_sales_amount,Number_of_orders"
NS_HEADER = "방송일시,노출(분),마더코드,상품코드,상품명,상품군,판매단가,취급액"
CN_MAPPING = """columns:
  session_id: 场次编号
  room_id: 直播间ID
  host_id: 主播
  start_time: 开播时间
  planned_duration_min: 计划时长(分钟)
  session_type: 场次类型
constants:
  platform: douyin
values:
  session_type: {日常: daily, 大促: festival_promo}
"""
CN_HEADER = "场次编号,直播间ID,主播,开播时间,计划时长(分钟),场次类型"


def _write(path: Path, header: str, lines: list[str], encoding: str = "utf-8") -> Path:
    path.write_bytes(("\n".join([header, *lines]) + "\n").encode(encoding))
    return path


def _session(i: int, start: str, extra: str = "") -> str:
    return f"S{i},r1,douyin,h1,{start},60,daily{extra}"


def _sessions(tmp_path: Path, starts: list[str], name: str = "sessions.csv") -> Path:
    lines = [_session(i, s) for i, s in enumerate(starts, start=1)]
    return _write(tmp_path / name, SESSION_HEADER, lines)


def _import(path: Path, table: str = "sessions", **kw: object):
    return import_table(path, table=table, mapping=kw.pop("mapping", None), tz=TZ, **kw)


def _days(result) -> list[str]:
    return list(result.table["start_time"].dt.strftime("%Y-%m-%d"))


def _cells(err: pytest.ExceptionInfo[ContractError]) -> set[tuple[object, str]]:
    failures = err.value.failures
    return set(zip(failures["row"], failures["column"], strict=True))


def _purchases(path: Path, **kw: object):
    args: dict = dict(fan_col="fan", time_col="time", amount_col="amount", sep=None)
    args |= {"time_format": None, "room_id": "store", "tz": TZ} | kw
    return import_transactions(path, **args)


def _cli(*args: str):
    from livecast.cli import app

    return CliRunner().invoke(app, ["import", *args])


def _text(output: str) -> str:
    """CLI output with rich's line wrapping undone."""
    return " ".join(output.split())


# --------------------------------------------------------------------------- 1. dates


def test_slash_dates_use_one_order_per_column(tmp_path) -> None:
    day_first = _sessions(tmp_path, ["01/02/2024 20:00", "13/02/2024 20:00"], "d.csv")
    assert _days(_import(day_first)) == ["2024-02-01", "2024-02-13"]  # not 2 January
    month_first = _sessions(tmp_path, ["01/02/2024 20:00", "02/13/2024 20:00"], "m.csv")
    assert _days(_import(month_first)) == ["2024-01-02", "2024-02-13"]
    short_year = _sessions(tmp_path, ["13/02/24", "01/03/99"], "y.csv")
    assert _days(_import(short_year)) == ["2024-02-13", "1999-03-01"]
    chinese = _sessions(tmp_path, ["2024年6月1日 20:00", "2024/6/2 8:05"], "cn.csv")
    assert _days(_import(chinese)) == ["2024-06-01", "2024-06-02"]


def test_ambiguous_slash_dates_are_an_error_naming_the_column(tmp_path) -> None:
    export = _write(
        tmp_path / "cn.csv",
        CN_HEADER,
        ["S1,007,小王,01/02/2024 20:00,60,日常", "S2,007,小王,03/04/2024 20:00,60,大促"],
    )
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CN_MAPPING, encoding="utf-8")
    with pytest.raises(ValueError) as err:
        _import(export, mapping=mapping)
    text = str(err.value)
    assert "'start_time'" in text and "'开播时间'" in text
    assert "'01/02/2024 20:00'" in text and "'03/04/2024 20:00'" in text
    assert "--dayfirst" in text and "--time-format" in text
    # the same day either way is not ambiguous
    same = _sessions(tmp_path, ["05/05/2024", "06/06/2024"], "same.csv")
    assert _days(_import(same)) == ["2024-05-05", "2024-06-06"]


def test_dayfirst_and_time_format_settle_the_order(tmp_path) -> None:
    export = _sessions(tmp_path, ["01/02/2024 20:00", "03/04/2024 20:00"])
    assert _days(_import(export, dayfirst=True)) == ["2024-02-01", "2024-04-03"]
    assert _days(_import(export, dayfirst=False)) == ["2024-01-02", "2024-03-04"]
    fmt = "%d/%m/%Y %H:%M"
    assert _days(_import(export, time_format=fmt)) == ["2024-02-01", "2024-04-03"]
    with pytest.raises(ValueError, match="not both"):
        _import(export, time_format=fmt, dayfirst=True)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(
        "columns: {"
        + ", ".join(f"{c}: {c}" for c in SESSION_HEADER.split(","))
        + "}\ndayfirst: true\n",
        encoding="utf-8",
    )
    assert _days(_import(export, mapping=mapping)) == ["2024-02-01", "2024-04-03"]
    assert _days(_import(export, mapping=mapping, dayfirst=False)) == ["2024-01-02", "2024-03-04"]
    mapping.write_text("time_format: '%d/%m/%Y'\ndayfirst: true\n", encoding="utf-8")
    with pytest.raises(ValueError, match="time_format or dayfirst, not both"):
        _import(export, mapping=mapping)


def test_mixed_day_month_orders_list_the_rows(tmp_path) -> None:
    export = _sessions(tmp_path, ["01/02/2024 20:00", "13/02/2024 20:00", "02/13/2024 20:00"])
    with pytest.raises(ContractError) as err:
        _import(export)
    assert _cells(err) == {(3, "start_time"), (4, "start_time")}
    checks = list(err.value.failures["check"])
    assert "day first" in checks[0] and "'02/13/2024 20:00' (row 4)" in checks[0]
    assert all("--dayfirst" in c for c in checks)
    with pytest.raises(ContractError) as err:
        _import(export, dayfirst=True)  # the option decides; the month-first cell fails
    assert _cells(err) == {(4, "start_time")}


def test_mixed_date_layouts_list_the_rarer(tmp_path) -> None:
    export = _sessions(tmp_path, ["2024-02-01 20:00", "2024-02-02 20:00", "13/02/2024 20:00"])
    with pytest.raises(ContractError) as err:
        _import(export)
    assert _cells(err) == {(4, "start_time")}
    assert "'2024-02-01 20:00' (row 2)" in err.value.failures["check"].iloc[0]


def test_transaction_dates_use_one_order_per_column(tmp_path) -> None:
    log = _write(tmp_path / "p.csv", "fan,time,amount", ["1,01/02/2024,5", "2,13/02/2024,6"])
    days = _purchases(log).table["event_time"].dt.strftime("%Y-%m-%d")
    assert list(days) == ["2024-02-01", "2024-02-13"]
    unclear = _write(tmp_path / "u.csv", "fan,time,amount", ["1,01/02/2024,5", "2,03/04/2024,6"])
    with pytest.raises(ValueError, match=r"'time'.*'01/02/2024'"):
        _purchases(unclear)
    days = _purchases(unclear, dayfirst=False).table["event_time"].dt.strftime("%m-%d")
    assert list(days) == ["01-02", "03-04"]


def test_xlsx_text_dates_use_one_order_per_column(tmp_path) -> None:
    pytest.importorskip("openpyxl")
    rows = [r.split(",") for r in (_session(1, "01/02/2024 20:00"), _session(2, "03/04/2024"))]
    frame = pd.DataFrame(rows, columns=SESSION_HEADER.split(","))
    frame.to_excel(tmp_path / "s.xlsx", index=False, engine="openpyxl")
    with pytest.raises(ValueError, match="'01/02/2024 20:00'"):
        _import(tmp_path / "s.xlsx")
    assert _days(_import(tmp_path / "s.xlsx", dayfirst=True)) == ["2024-02-01", "2024-04-03"]


def test_cli_time_options(tmp_path) -> None:
    export = _sessions(tmp_path, ["01/02/2024 20:00", "03/04/2024 20:00"])
    out = tmp_path / "out"
    args = ["table", str(export), "--table", "sessions", "--out", str(out)]
    res = _cli(*args)
    assert res.exit_code == 2, res.output
    assert "start_time" in res.output and "--dayfirst" in res.output
    assert "Traceback" not in res.output and not (out / "sessions.parquet").exists()
    for option, first in [
        (["--dayfirst"], "2024-02-01"),
        (["--monthfirst"], "2024-01-02"),
        (["--time-format", "%d/%m/%Y %H:%M"], "2024-02-01"),
    ]:
        res = _cli(*args, *option)
        assert res.exit_code == 0, res.output
        written = pd.read_parquet(out / "sessions.parquet")
        assert written["start_time"].dt.strftime("%Y-%m-%d").iloc[0] == first
    log = _write(tmp_path / "p.csv", "fan,time,amount", ["1,01/02/2024,5", "2,03/04/2024,6"])
    tx = ["transactions", str(log), "--out", str(out), "--fan-col", "fan", "--time-col", "time"]
    tx += ["--amount-col", "amount"]
    assert _cli(*tx).exit_code == 2
    res = _cli(*tx, "--dayfirst")
    assert res.exit_code == 0, res.output


# --------------------------------------------------------------------------- 2. contradictions


def _contradicting_sessions(tmp_path: Path) -> Path:
    return _write(
        tmp_path / "outcomes.csv",
        OUTCOME_HEADER,
        [
            _session(1, "2024-06-01 20:00", ",1000,50,40,5000"),  # row 2: fine
            _session(2, "2024-06-02 20:00", ",10,500,,9000"),  # row 3: orders > viewers
            _session(3, "2024-06-03 20:00", ",1000,50,60,5000"),  # row 4: buyers > orders
            _session(4, "2024-06-04 20:00", ",1000,500,,0"),  # row 5: GMV 0 with orders
            _session(5, "2024-06-05 20:00", ",1000,,,"),  # row 6: nothing to compare
        ],
    )


def test_contradicting_outcomes_are_warnings_and_strict_errors(tmp_path) -> None:
    export = _contradicting_sessions(tmp_path)
    result = _import(export)
    assert len(result.table) == 5  # real exports have odd rows: kept by default
    warned = set(zip(result.warnings["row"], result.warnings["column"], strict=True))
    assert warned == {(3, "orders"), (4, "buyers"), (5, "gmv")}
    assert result.summary["contract_warnings"] == 3
    checks = " | ".join(result.warnings["check"])
    assert "more orders than viewers (viewers 10)" in checks
    assert "more buyers than orders (orders 50)" in checks
    assert "gmv 0 with orders 500" in checks
    with pytest.raises(ContractError) as err:
        _import(export, strict=True)
    assert _cells(err) == warned


def test_live_price_above_list_price_is_a_warning(tmp_path) -> None:
    export = _write(
        tmp_path / "products.csv",
        "session_id,sku_id,category,list_price,live_price,is_new_launch,units_sold,gmv",
        ["S1,K1,beauty,100,80,false,2,160", "S1,K2,beauty,100,120,false,1,120"],
    )
    result = _import(export, table="session_products")
    assert list(result.warnings["row"]) == [3]
    assert list(result.warnings["column"]) == ["live_price"]
    assert "above the list price (list_price 100)" in result.warnings["check"].iloc[0]
    with pytest.raises(ContractError):
        _import(export, table="session_products", strict=True)


def test_cli_prints_warnings_and_strict_exits_2(tmp_path) -> None:
    export = _contradicting_sessions(tmp_path)
    out = tmp_path / "out"
    args = ["table", str(export), "--table", "sessions", "--out", str(out)]
    res = _cli(*args)
    assert res.exit_code == 0, res.output
    text = _text(res.output)
    assert "3 contract warning(s)" in text and "more orders than viewers" in text
    assert len(pd.read_parquet(out / "sessions.parquet")) == 5
    (out / "sessions.parquet").unlink()
    res = _cli(*args, "--strict")
    assert res.exit_code == 2, res.output
    assert "3 row/column failure(s)" in _text(res.output)
    assert "more orders than viewers" in res.output and "Traceback" not in res.output
    assert not (out / "sessions.parquet").exists()


def test_chanmama_contradictions_are_warnings(tmp_path) -> None:
    export = _write(
        tmp_path / "cm.csv",
        CHANMAMA_HEADER,
        ["Host A,06-01 20:00,2小时,10000,50000,100", "Host A,06-02 20:00,2小时,10,0,500"],
    )
    result = import_chanmama(export, year=2021, tz=TZ)
    warned = set(zip(result.warnings["row"], result.warnings["column"], strict=True))
    assert warned == {(3, "orders"), (3, "gmv")}
    with pytest.raises(ContractError) as err:
        import_chanmama(export, year=2021, tz=TZ, strict=True)
    assert _cells(err) == warned
    res = _cli("chanmama", str(export), "--year", "2021", "--out", str(tmp_path / "o"))
    assert res.exit_code == 0 and "more orders than viewers" in res.output
    res = _cli("chanmama", str(export), "--year", "2021", "--out", str(tmp_path / "s"), "--strict")
    assert res.exit_code == 2 and not (tmp_path / "s" / "sessions.parquet").exists()


def _ns_raw(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=NS_HEADER.split(","))
    frame.index = pd.RangeIndex(2, 2 + len(frame))
    return frame


def test_ns_contradictions_name_the_first_file_row() -> None:
    raw = _ns_raw(
        [
            ("2019-01-01 6:00", 20, 100, 1, "A", "의류", 10_000, 50_000),  # row 2: 5 orders
            ("2019-01-01 6:00", 0, 100, 2, "B", "의류", 10_000, 0),
            ("2019-01-01 7:00", 20, 200, 3, "C", "의류", 10_000, 10_000),  # row 4: no rating
        ]
    )
    wide = pd.DataFrame({"시간대": [f"6:{m:02d}" for m in range(20)], "2019-01-01": 1e-5})
    from features.importers.ns_homeshopping import rating_series

    result = build_ns_dataset(raw, rating=rating_series(wide), tz="Asia/Seoul")
    ds, summary = result  # still unpacks as before
    assert len(ds.sessions) == 2 and summary["contract_warnings"] == 1
    sessions = result.warnings["sessions"]
    assert list(zip(sessions["row"], sessions["column"], strict=True)) == [(2, "orders")]
    assert len(result.warnings["session_products"]) == 0
    with pytest.raises(ContractError):
        build_ns_dataset(raw, rating=rating_series(wide), tz="Asia/Seoul", strict=True)


# --------------------------------------------------------------------------- 3. future, no rows


def test_future_session_with_outcomes_warns(tmp_path) -> None:
    export = _write(
        tmp_path / "future.csv",
        SESSION_HEADER + ",viewers",
        [_session(1, "2024-06-01 20:00", ",100"), _session(2, "2099-06-01 20:00", ",100"),
         _session(3, "2099-06-02 20:00", ",")],  # row 4: a plan, no outcomes: fine
    )  # fmt: skip
    result = _import(export)
    assert list(zip(result.warnings["row"], result.warnings["column"], strict=True)) == [
        (3, "start_time")
    ]
    assert "starts after now" in result.warnings["check"].iloc[0]
    assert "(viewers)" in result.warnings["check"].iloc[0]
    with pytest.raises(ContractError) as err:
        _import(export, strict=True)
    assert _cells(err) == {(3, "start_time")}
    # the clock is an argument: the same row is fine seen from 2100
    from features.contract import consistency_warnings

    valid = validate(pd.read_csv(export), "sessions")
    assert len(consistency_warnings(valid, "sessions", now=pd.Timestamp("2100-01-01", tz=TZ))) == 0


def test_future_events_warn(tmp_path) -> None:
    log = _write(tmp_path / "p.csv", "fan,time,amount", ["1,2024-01-01,5", "2,2099-01-01,6"])
    result = _purchases(log)
    assert list(result.warnings["row"]) == [3] and result.summary["contract_warnings"] == 1
    with pytest.raises(ContractError):
        _purchases(log, strict=True)


def test_header_only_files_are_an_error(tmp_path) -> None:
    generic = _write(tmp_path / "s.csv", SESSION_HEADER, [])
    with pytest.raises(ValueError, match="no rows: the file has a header but no data rows"):
        _import(generic)
    blank = _write(tmp_path / "b.csv", SESSION_HEADER, [",,,,,,", ""])
    with pytest.raises(ValueError, match="no rows: all 2 rows are blank"):
        _import(blank)
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(ValueError, match="no rows"):
        _import(tmp_path / "empty.csv")
    with pytest.raises(ValueError, match="no rows"):
        _purchases(_write(tmp_path / "p.csv", "fan,time,amount", []))
    with pytest.raises(ValueError, match="no rows"):
        import_chanmama(_write(tmp_path / "cm.csv", CHANMAMA_HEADER, []), year=2021, tz=TZ)
    aborted = _write(tmp_path / "ab.csv", CHANMAMA_HEADER, ["Host A,06-01 20:00,11秒,0,0,0"])
    with pytest.raises(ValueError, match="no sessions: every row is an aborted start"):
        import_chanmama(aborted, year=2021, tz=TZ)
    ns = _write(tmp_path / "ns.csv", NS_HEADER, [])
    with pytest.raises(ValueError, match="no rows"):
        import_ns_homeshopping(ns, rating=None)


def test_header_only_xlsx_is_an_error(tmp_path) -> None:
    pytest.importorskip("openpyxl")
    pd.DataFrame(columns=SESSION_HEADER.split(",")).to_excel(tmp_path / "s.xlsx", index=False)
    with pytest.raises(ValueError, match="no rows"):
        _import(tmp_path / "s.xlsx")
    pd.DataFrame(columns=CHANMAMA_HEADER.split(",")).to_excel(tmp_path / "c.xlsx", index=False)
    with pytest.raises(ValueError, match="no rows"):
        import_chanmama(tmp_path / "c.xlsx", year=2021, tz=TZ)


def test_cli_header_only_exits_2(tmp_path) -> None:
    export = _write(tmp_path / "s.csv", SESSION_HEADER, [])
    out = tmp_path / "out"
    res = _cli("table", str(export), "--table", "sessions", "--out", str(out))
    assert res.exit_code == 2 and "no rows: the file has a header" in _text(res.output)
    assert not (out / "sessions.parquet").exists()


# --------------------------------------------------------------------------- 4. blank keys


def test_transaction_row_with_blank_keys_is_a_failing_row(tmp_path) -> None:
    log = _write(
        tmp_path / "p.csv",
        "fan,time,amount,note",
        ["0001,2024-03-01,10,ok", ",,,refund by phone", ",,,"],  # row 3 has content, row 4 not
    )
    with pytest.raises(ContractError) as err:
        _purchases(log)
    assert _cells(err) == {(3, "fan"), (3, "time"), (3, "amount")}


def test_rows_with_blank_keys_fail_in_every_importer(tmp_path) -> None:
    generic = _write(
        tmp_path / "s.csv",
        SESSION_HEADER + ",title",
        [_session(1, "2024-06-01 20:00", ",ok"), ",,,,,,,orphan title", ",,,,,,,"],
    )
    with pytest.raises(ContractError) as err:
        _import(generic)
    assert {row for row, _ in _cells(err)} == {3}
    chanmama = _write(
        tmp_path / "cm.csv", CHANMAMA_HEADER, ["Host A,06-01 20:00,2小时,100,500,5", ",,,100,,"]
    )
    with pytest.raises(ContractError) as err:
        import_chanmama(chanmama, year=2021, tz=TZ)
    assert _cells(err) == {(3, "Name"), (3, "Start_time")}
    ns = _ns_raw([("2019-01-01 6:00", 20, 100, 1, "A", "의류", 10_000, 50_000),
                  (None, None, None, None, "orphan", None, None, None)])  # fmt: skip
    with pytest.raises(ContractError) as err:
        build_ns_dataset(ns)
    assert {row for row, _ in _cells(err)} == {3}


# --------------------------------------------------------------------------- 5. zones, years


def test_mixed_utc_offsets_are_failing_rows(tmp_path) -> None:
    mixed = _sessions(
        tmp_path, ["2024-06-01T20:00+08:00", "2024-06-02T20:00+09:00", "2024-06-03T20:00+08:00"]
    )
    with pytest.raises(ContractError) as err:
        _import(mixed)
    assert _cells(err) == {(3, "start_time")}
    assert "+09:00" in err.value.failures["check"].iloc[0]
    # one offset, whatever it is, gives exact instants
    utc = _sessions(tmp_path, ["2024-06-01T12:00:00Z", "2024-06-02T12:00:00Z"], "utc.csv")
    hours = _import(utc).table["start_time"].dt.hour
    assert list(hours) == [20, 20]
    # daylight saving: both offsets are the zone's own
    berlin = _sessions(tmp_path, ["2024-01-15T20:00+01:00", "2024-07-15T20:00+02:00"], "b.csv")
    table = import_table(berlin, table="sessions", mapping=None, tz="Europe/Berlin").table
    assert list(table["start_time"].dt.hour) == [20, 20]
    # with and without an offset: the rarer kind fails
    both = _sessions(
        tmp_path, ["2024-06-01 20:00", "2024-06-02 20:00", "2024-06-03T20:00+08:00"], "n.csv"
    )
    with pytest.raises(ContractError) as err:
        _import(both)
    assert _cells(err) == {(4, "start_time")}


def test_out_of_range_years_are_failing_rows(tmp_path) -> None:
    export = _sessions(
        tmp_path, ["2024-06-01 20:00", "2300-06-01 20:00", "10000-01-01", "0001-01-01"]
    )
    with pytest.raises(ContractError) as err:
        _import(export)
    assert _cells(err) == {(3, "start_time"), (4, "start_time"), (5, "start_time")}
    log = _write(tmp_path / "p.csv", "fan,time,amount", ["1,2024-01-01,5", "2,2300-01-01,6"])
    with pytest.raises(ContractError) as err:
        _purchases(log)
    assert _cells(err) == {(3, "time")}
    chanmama = _write(
        tmp_path / "cm.csv",
        CHANMAMA_HEADER,
        ["Host A,06-01 20:00,2小时,100,500,5", "Host A,2300-06-02 20:00,2小时,100,500,5"],
    )
    with pytest.raises(ContractError) as err:
        import_chanmama(chanmama, year=2021, tz=TZ)
    assert {row for row, _ in _cells(err)} == {3}


def test_contract_reports_years_and_offsets_as_rows() -> None:
    frame = pd.DataFrame(
        {
            "session_id": ["a", "b", "c"],
            "room_id": "r",
            "platform": "douyin",
            "host_id": "h",
            "start_time": ["2024-06-01T20:00+08:00", "2024-06-01T20:00+09:00", "2300-01-01"],
            "planned_duration_min": 60.0,
            "session_type": "daily",
        }
    )
    with pytest.raises(ContractError) as err:
        validate(frame, "sessions")
    assert _cells(err) == {(2, "start_time")}
    out = validate(frame.iloc[:2], "sessions")  # exact instants, each with its offset
    assert list(out["start_time"].dt.hour) == [20, 19]


def test_cli_mixed_offsets_list_rows_not_pandas_messages(tmp_path) -> None:
    export = _sessions(tmp_path, ["2024-06-01T20:00+08:00", "2024-06-02T20:00+09:00",
                                  "2024-06-03T20:00+08:00", "2300-06-01T20:00+08:00"])  # fmt: skip
    res = _cli("table", str(export), "--table", "sessions", "--out", str(tmp_path / "out"))
    assert res.exit_code == 2, res.output
    text = _text(res.output)
    assert "2 row/column failure(s)" in text and "+09:00" in text and "2261" in text
    assert "Mixed timezones" not in text and "Out of bounds" not in text


# --------------------------------------------------------------------------- 6. encodings


CN_ROWS = ["S1,007,小王,2024-06-18 20:00,180,大促", "S2,007,小王,2024-06-19 20:00,120,日常"]


@pytest.mark.parametrize(("written", "detected"), [("gbk", "gb18030"), ("utf-8-sig", "utf-8-sig")])
def test_chinese_encodings_are_detected(tmp_path, written, detected) -> None:
    export = _write(tmp_path / "cn.csv", CN_HEADER, CN_ROWS, encoding=written)
    mapping = tmp_path / "m.yaml"
    mapping.write_text(CN_MAPPING, encoding="utf-8")
    result = _import(export, mapping=mapping)
    assert list(result.table["host_id"]) == ["小王", "小王"]
    assert list(result.table["session_type"]) == ["festival_promo", "daily"]
    assert result.summary["encoding"] == detected
    log = _write(tmp_path / "p.csv", "顾客,时间,金额", ["张三,2024-01-01,5"], encoding=written)
    result = _purchases(log, fan_col="顾客", time_col="时间", amount_col="金额")
    assert list(result.table["fan_id"]) == ["张三"] and result.summary["encoding"] == detected
    cm = _write(tmp_path / "cm.csv", "达人,开播时间,直播时长,场观",
                ["舒畅,06-01 20:00,2小时,100"], encoding=written)  # fmt: skip
    result = import_chanmama(cm, year=2021, tz=TZ)
    assert list(result.table["host_id"]) == ["舒畅"] and result.summary["encoding"] == detected


def test_ns_reads_a_gb18030_export(tmp_path) -> None:
    row = "2019-01-01 6:00,20,100,1,상품 A,의류,10000,50000"
    path = _write(tmp_path / "ns.csv", NS_HEADER, [row], encoding="gb18030")
    ds, summary = import_ns_homeshopping(path, rating=None)
    assert list(ds.session_products["category"]) == ["apparel"]
    assert summary["encoding"] == "gb18030"
    with pytest.raises(ValueError, match=r"as utf-8: byte 0x\w\w at offset 0 \(line 1\)"):
        import_ns_homeshopping(path, rating=None, encoding="utf-8")


def test_undecodable_file_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"fan,time,amount\n\x80\x80,2024-01-01,5\n")
    with pytest.raises(ValueError) as err:
        _purchases(bad)
    text = str(err.value)
    assert "as utf-8: byte 0x80 at offset 16 (line 2)" in text
    assert "as gb18030: byte 0x80 at offset 16 (line 2)" in text
    assert "--encoding" in text
    gbk = _write(tmp_path / "gbk.csv", "fan,time,amount", ["张三,2024-01-01,5"], encoding="gbk")
    with pytest.raises(ValueError, match=r"as utf-8: byte 0xd5 at offset 16 \(line 2\)"):
        _purchases(gbk, encoding="utf-8")
    assert list(_purchases(gbk, encoding="gbk").table["fan_id"]) == ["张三"]
    with pytest.raises(ValueError, match="unknown encoding 'klingon'"):
        _purchases(gbk, encoding="klingon")


def test_encoding_is_for_text_files(tmp_path) -> None:
    pytest.importorskip("openpyxl")
    frame = pd.DataFrame(
        [_session(1, "2024-06-01 20:00").split(",")], columns=SESSION_HEADER.split(",")
    )
    frame.to_excel(tmp_path / "s.xlsx", index=False)
    with pytest.raises(ValueError, match="applies to text files"):
        _import(tmp_path / "s.xlsx", encoding="gbk")


def test_cli_encoding_option(tmp_path) -> None:
    log = _write(tmp_path / "p.csv", "fan,time,amount", ["张三,2024-01-01,5"], encoding="gbk")
    tx = ["transactions", str(log), "--out", str(tmp_path / "out"), "--fan-col", "fan"]
    tx += ["--time-col", "time", "--amount-col", "amount"]
    res = _cli(*tx, "--encoding", "gb18030")
    assert res.exit_code == 0, res.output
    assert list(pd.read_parquet(tmp_path / "out" / "fan_events.parquet")["fan_id"]) == ["张三"]
    res = _cli(*tx, "--encoding", "utf-8")
    assert res.exit_code == 2
    assert "offset 16" in _text(res.output) and "Traceback" not in res.output
