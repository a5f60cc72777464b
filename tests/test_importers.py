"""Importers: Chanmama exports, purchase logs, NS Home Shopping and the generic mapped import."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pytest
from typer.testing import CliRunner

from features.contract import CATEGORIES, SESSION_TYPES, ContractError, validate
from features.importers.chanmama import (
    host_slug,
    import_chanmama,
    infer_session_type,
    parse_duration_seconds,
    parse_number,
    parse_percent,
)
from features.importers.generic import import_table, load_mapping
from features.importers.ns_homeshopping import (
    build_ns_dataset,
    import_ns_homeshopping,
    mean_rating,
    rating_series,
)
from features.importers.transactions import import_transactions
from tests.conftest import shared_file

DATA = Path(__file__).parent / "data"
CHANMAMA = ("chanmama_sample", "douyin_live_sessions_sample.xlsx")
CDNOW = ("cdnow", "CDNOW_master.txt")
NS = ("ns_homeshopping_2019", "2019_performance.csv")
TZ = "Asia/Shanghai"


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _sheet_rows(path: Path) -> tuple[list[str], list[list[object]]]:
    """Header and data rows of the first sheet, read with openpyxl (independent of pandas)."""
    ws = openpyxl.load_workbook(path, read_only=True).active
    rows = [list(r) for r in ws.iter_rows(values_only=True)]
    return [str(h) for h in rows[0]], rows[1:]


# --------------------------------------------------------------------------- chanmama cells


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("13小时46分钟38秒", 13 * 3600 + 46 * 60 + 38),
        ("46分钟38秒", 46 * 60 + 38),
        ("38秒", 38),
        ("2小时", 7200),
        ("2分", 120),
        ("3小时19秒", 3 * 3600 + 19),
        ("3:16:47", 3 * 3600 + 16 * 60 + 47),
    ],
)
def test_duration_strings(text: str, seconds: int) -> None:
    assert parse_duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["abc", "12", "3小时abc", "小时"])
def test_bad_duration_strings_raise(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_seconds(text)


def test_blank_cells_are_missing_and_numbers_parse() -> None:
    assert parse_duration_seconds(" ") is None
    assert parse_number(" ") is None
    assert parse_number("1,234.5") == 1234.5
    assert parse_number("1.2万") == 12_000
    assert parse_percent("3.40%") == pytest.approx(0.034)
    assert parse_percent("0.034") == pytest.approx(0.034)
    with pytest.raises(ValueError):
        parse_number("12 units")


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("618年中钜惠-LV、GUCCI大牌捡漏专场", "festival_promo"),
        ("双11狂欢夜", "festival_promo"),
        ("限时清仓 全场5折", "clearance"),
        ("夏季新品首发", "new_launch"),
        ("LV、CHANEL超多大牌专场", "brand_collab"),
        ("某某品牌日", "brand_collab"),
        ("宠粉福利夜", "fan_welfare"),
        ("舒畅正在直播", "daily"),
        ("6180元手机专区", "daily"),  # 618 inside a longer number is not the festival
        (None, "daily"),
    ],
)
def test_session_type_from_title(title: str | None, expected: str) -> None:
    assert infer_session_type(title) == expected


def test_host_slug_is_readable_and_stable() -> None:
    assert host_slug("Zi An") == "zi-an"
    assert host_slug("  Zi  An ") == "zi-an"
    assert host_slug("舒畅") == "舒畅"


# --------------------------------------------------------------------------- chanmama sample


@pytest.fixture(scope="module")
def chanmama_sample() -> tuple[Path, list[str], list[list[object]]]:
    path = shared_file(*CHANMAMA)
    header, rows = _sheet_rows(path)
    return path, header, rows


def _raw_by_key(header: list[str], rows: list[list[object]]) -> dict[tuple[str, str], dict]:
    """Raw sample records keyed by (host name, ``MM-DD HH:MM``)."""
    out = {}
    for r in rows:
        if all(_blank(v) for v in r):
            continue
        rec = dict(zip(header, r, strict=True))
        out[(str(rec["Name"]).strip(), str(rec["Start_time"]).strip())] = rec
    return out


def test_chanmama_sample(chanmama_sample) -> None:
    path, header, rows = chanmama_sample
    result = import_chanmama(path, year=2021, tz=TZ)
    table = result.table
    raw = _raw_by_key(header, rows)
    non_empty = sum(1 for r in rows if not all(_blank(v) for v in r))
    assert len(table) == non_empty == result.summary["sessions"]
    assert result.summary["empty_rows_skipped"] == len(rows) - non_empty
    validate(table, "sessions", tz=TZ)  # the output meets the contract
    assert table["platform"].eq("douyin").all()
    assert table["session_id"].is_unique
    assert set(table["host_id"]) == {host_slug(k[0]) for k in raw}
    assert (table["start_time"].dt.year == 2021).all()

    keys = list(
        zip(table["host_name"], table["start_time"].dt.strftime("%m-%d %H:%M"), strict=True)
    )
    assert set(keys) == set(raw)
    for i, key in enumerate(keys):
        rec = raw[key]
        row = table.iloc[i]
        assert row["title"] == str(rec["Name_of_the_livestream"]).strip()
        assert row["viewers"] == float(rec["Views"])
        if _blank(rec["Total_sales_amount"]):
            assert np.isnan(row["gmv"])
        else:
            assert row["gmv"] == pytest.approx(float(rec["Total_sales_amount"]))
        pct = float(str(rec["Fan Conversion Ratio"]).rstrip("%")) / 100
        assert row["follower_conversion_rate"] == pytest.approx(pct)

    # a known cell: Zi An on 06-27 20:30 ran "3小时19秒" = 3 h 0 min 19 s
    known = table.loc[keys.index(("Zi An", "06-27 20:30"))]
    assert known["actual_duration_min"] == pytest.approx(180 + 19 / 60)
    assert known["planned_duration_min"] == pytest.approx(180 + 19 / 60)
    blank_gmv = sum(1 for rec in raw.values() if _blank(rec["Total_sales_amount"]))
    assert blank_gmv > 0
    assert table["gmv"].isna().sum() == blank_gmv == result.summary["gmv_missing"]
    # orders derived from GMV / AOV wherever both exist, missing otherwise
    has = table["gmv"].notna() & (table["aov"] > 0)
    assert np.allclose(table.loc[has, "orders"], np.round(table["gmv"] / table["aov"])[has])
    assert table.loc[table["gmv"].isna(), "orders"].isna().all()


def _big_export(sample: Path) -> tuple[pd.DataFrame, int, int]:
    """A multi-host export built from the sample: 10 hosts, extra and shuffled columns, blank
    rows in the middle, plus a host whose sessions (newest first) cross New Year."""
    base = pd.read_excel(sample, dtype=str)
    base = base[~base.apply(lambda r: all(_blank(v) for v in r), axis=1)]
    parts = []
    for k in range(10):
        part = base.copy()
        part["Name"] = f"Host {k:02d}"
        parts.append(part)
    wrap = base.head(4).copy()
    wrap["Name"] = "Wrap Host"
    wrap["Start_time"] = ["01-03 20:00", "01-01 20:00", "12-30 20:00", "12-28 20:00"]
    parts.append(wrap)
    big = pd.concat(parts, ignore_index=True)
    big["Unknown_metric"] = "x"
    big["备注"] = "ignored"
    n_sessions = len(big)
    blank = pd.DataFrame([[None] * big.shape[1]] * 5, columns=big.columns)
    big = pd.concat(
        [big.iloc[:100], blank.iloc[:3], big.iloc[100:200], blank.iloc[3:], big.iloc[200:]]
    )
    rng = np.random.default_rng(7)
    big = big[list(rng.permutation(big.columns))]
    return big.reset_index(drop=True), n_sessions, 5


@pytest.mark.parametrize("fmt", ["xlsx", "csv"])
def test_chanmama_multi_host_export(chanmama_sample, tmp_path, fmt) -> None:
    path, _, _ = chanmama_sample
    big, n_sessions, n_blank = _big_export(path)
    target = tmp_path / f"export.{fmt}"
    if fmt == "xlsx":
        big.to_excel(target, index=False, engine="openpyxl")
    else:
        big.to_csv(target, index=False)
    result = import_chanmama(target, year=2022, tz=TZ)
    table = result.table
    assert len(table) == n_sessions
    assert result.summary["empty_rows_skipped"] == n_blank
    assert result.summary["hosts"] == table["host_id"].nunique() == 11
    assert table["session_id"].is_unique
    assert "Unknown_metric" not in table.columns
    sample = import_chanmama(path, year=2022, tz=TZ).table
    host = table[table["host_id"] == "host-03"].sort_values("start_time")
    assert np.allclose(host["viewers"], sample.sort_values("start_time")["viewers"])
    assert host["gmv"].sum() == pytest.approx(sample["gmv"].sum())
    wrap = table[table["host_id"] == "wrap-host"].sort_values("start_time")
    got = list(wrap["start_time"].dt.strftime("%Y-%m-%d"))
    assert got == ["2021-12-28", "2021-12-30", "2022-01-01", "2022-01-03"]
    assert result.summary["year_rolls"] == 1


def test_chanmama_bad_cell_lists_the_row(chanmama_sample, tmp_path) -> None:
    path, _, _ = chanmama_sample
    df = pd.read_excel(path, dtype=str)
    df.loc[4, "Duration"] = "three hours"
    df.loc[6, "Fan Conversion Ratio"] = "n/a%"
    target = tmp_path / "bad.csv"
    df.to_csv(target, index=False)
    with pytest.raises(ContractError) as err:
        import_chanmama(target, year=2021, tz=TZ)
    failures = err.value.failures
    assert set(zip(failures["row"], failures["column"], strict=True)) == {
        (4 + 2, "Duration"),  # spreadsheet rows: header is row 1
        (6 + 2, "Fan Conversion Ratio"),
    }
    assert "three hours" in str(err.value)


def test_chanmama_missing_required_column(chanmama_sample, tmp_path) -> None:
    path, _, _ = chanmama_sample
    df = pd.read_excel(path, dtype=str).drop(columns=["Views"])
    target = tmp_path / "no_views.csv"
    df.to_csv(target, index=False)
    with pytest.raises(ValueError, match="Views") as err:
        import_chanmama(target, year=2021, tz=TZ)
    assert "Start_time" in str(err.value)  # lists the file's columns


# --------------------------------------------------------------------------- transactions


def test_cdnow_purchases() -> None:
    path = shared_file(*CDNOW)
    started = time.perf_counter()
    result = import_transactions(
        path,
        fan_col="customer_id",
        time_col="date",
        amount_col="dollar_value",
        sep=r"\s+",
        time_format="%Y%m%d",
        room_id="cdnow",
        tz=TZ,
    )
    elapsed = time.perf_counter() - started
    events = result.table
    assert len(events) == 69_659
    assert events["fan_id"].nunique() == 23_570 == result.summary["fans"]
    assert events["event_type"].eq("order").all()
    days = events["event_time"].dt.tz_convert(TZ).dt.date
    assert days.min() == pd.Timestamp("1997-01-01").date()
    assert days.max() == pd.Timestamp("1998-06-30").date()
    assert "00001" in set(events["fan_id"])  # ids keep their leading zeros
    raw = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str})
    assert events["amount"].sum() == pytest.approx(raw["dollar_value"].sum())
    assert elapsed < 15


def _purchases(path: Path, **kw) -> object:
    args = dict(fan_col="fan", time_col="time", amount_col="amount", sep=None, time_format=None)
    args.update(kw)
    return import_transactions(path, room_id="store", tz=TZ, **args)


def test_purchases_refunds_and_zero_amounts() -> None:
    result = _purchases(DATA / "purchases.csv")
    events = result.table
    assert len(events) == 5  # the blank line is skipped, not an event
    assert result.summary["blank_rows_skipped"] == 1
    refund = events[events["event_type"] == "refund"]
    assert list(refund["fan_id"]) == ["0001"]
    assert refund["amount"].iloc[0] == pytest.approx(59.90)
    assert (events["amount"] >= 0).all()
    zero = events[events["amount"] == 0]
    assert list(zero["event_type"]) == ["order"]
    assert events.loc[events["fan_id"] == "0042", "amount"].max() == pytest.approx(1299.0)
    assert str(events["event_time"].dt.tz) == TZ


def test_purchases_missing_column_lists_available(tmp_path) -> None:
    with pytest.raises(ValueError, match="'customer'") as err:
        _purchases(DATA / "purchases.csv", fan_col="customer")
    assert "'fan'" in str(err.value) and "'amount'" in str(err.value)


def test_purchases_unparseable_date_lists_rows(tmp_path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text(
        "customer_id date number_of_cds dollar_value\n"
        "00001 19970101 1 11.77\n"
        "00002 1997-13-45 1 12.00\n"
        "00003 19970102 2 abc\n",
        encoding="utf-8",
    )
    with pytest.raises(ContractError) as err:
        import_transactions(
            bad,
            fan_col="customer_id",
            time_col="date",
            amount_col="dollar_value",
            sep=r"\s+",
            time_format="%Y%m%d",
            room_id="cdnow",
            tz=TZ,
        )
    failures = err.value.failures
    assert set(zip(failures["row"], failures["column"], strict=True)) == {
        (3, "date"),
        (4, "dollar_value"),
    }


# --------------------------------------------------------------------------- NS Home Shopping


def _ns_frame(rows: list[tuple]) -> pd.DataFrame:
    cols = [
        "방송일시",
        "노출(분)",
        "마더코드",
        "상품코드",
        "상품명",
        "상품군",
        "판매단가",
        "취급액",
    ]
    df = pd.DataFrame(rows, columns=cols)
    df.index = pd.RangeIndex(2, 2 + len(df))
    return df


def test_ns_shows_from_slots() -> None:
    raw = _ns_frame(
        [
            # show 1: family 100 over two 20-minute slots, two products in each slot
            ("2019-01-01 6:00", 20, 100, 1, "A 일시불", "의류", 10_000, 50_000),
            ("2019-01-01 6:00", 0, 100, 2, "B 무이자", "속옷", 20_000, 0),
            ("2019-01-01 6:20", 20, 100, 1, "A 일시불", "의류", 10_000, 30_000),
            ("2019-01-01 6:20", 0, 100, 2, "B 무이자", "속옷", 20_000, 40_000),
            # show 2: family 200, one slot; an unknown group and a missing price
            ("2019-01-01 6:40", 20, 200, 3, "C", "기타", 5_000, 25_000),
            ("2019-01-01 6:40", 0, 200, 4, "D", "가전", None, 10_000),
            # show 3: family 200 again after a long pause
            ("2019-01-01 9:00", 30, 200, 3, "C", "기타", 5_000, None),
        ]
    )
    ds, summary = build_ns_dataset(raw, tz="Asia/Seoul")
    s = ds.sessions.sort_values("start_time").reset_index(drop=True)
    assert list(s["room_id"]) == ["100", "200", "200"]
    assert list(s["planned_duration_min"]) == [40.0, 20.0, 30.0]
    assert list(s["gmv"]) == [120_000.0, 25_000.0, 0.0]
    assert list(s["orders"]) == [5 + 2 + 3 + 0, 5.0, 0.0]  # sales / price, summed
    assert s["title"].iloc[0] == "A 일시불 / B 무이자"
    assert s["start_time"].iloc[0] == pd.Timestamp("2019-01-01 06:00", tz="Asia/Seoul")
    assert s["viewers"].isna().all()  # no rating given
    assert summary["rows_dropped_missing_price"] == 1
    p = ds.session_products.set_index(["session_id", "sku_id"])
    first = s["session_id"].iloc[0]
    assert p.loc[(first, "1"), "gmv"] == 80_000 and p.loc[(first, "1"), "units_sold"] == 8
    assert p.loc[(first, "2"), "category"] == "apparel"
    assert p.loc[(s["session_id"].iloc[1], "3"), "category"] == "other"
    assert len(ds.session_products) == 4  # (show, product) pairs, missing-price row dropped


def test_ns_rating_broadcast_day_and_mean() -> None:
    wide = pd.DataFrame({"시간대": ["2:00", "2:01", "1:59"], "2019-01-01": [1.0, 3.0, 5.0]})
    rating = rating_series(wide)
    assert rating.index[-1] == pd.Timestamp("2019-01-02 01:59")  # before 02:00: next day
    start = pd.Series(pd.to_datetime(["2019-01-01 02:00", "2019-01-01 02:00", "2019-01-03 00:00"]))
    means = mean_rating(rating, start, pd.Series([2.0, 3.0, 1.0]))
    assert means[0] == pytest.approx(2.0)
    assert np.isnan(means[1])  # 02:02 is not in the file
    assert np.isnan(means[2])


@pytest.fixture(scope="module")
def ns_import():
    path = shared_file(*NS)
    started = time.perf_counter()
    ds, summary = import_ns_homeshopping(path)
    return path, ds, summary, time.perf_counter() - started


def test_ns_homeshopping_shows(ns_import) -> None:
    path, ds, summary, elapsed = ns_import
    sessions, products = ds.sessions, ds.session_products
    assert 6_500 <= len(sessions) <= 7_500
    assert summary["shows"] == len(sessions)
    assert (sessions["planned_duration_min"] == 60).mean() > 0.8
    raw = pd.read_csv(path)
    assert sessions["gmv"].sum() == pytest.approx(float(raw["취급액"].sum()))
    assert products["gmv"].sum() == pytest.approx(float(raw["취급액"].sum()))
    assert set(products["category"]) <= set(CATEGORIES)
    assert products.groupby("session_id")["gmv"].sum().reindex(
        sessions["session_id"]
    ).to_numpy() == pytest.approx(sessions["gmv"].to_numpy())
    assert sessions["session_id"].is_unique
    assert set(products["session_id"]) <= set(sessions["session_id"])
    assert sessions["viewers"].notna().mean() > 0.95  # the rating file sits beside it
    assert str(sessions["start_time"].dt.tz) == "Asia/Seoul"
    validate(sessions, "sessions")
    validate(products, "session_products")
    assert elapsed < 20


# --------------------------------------------------------------------------- generic


def test_generic_mapping_happy_path() -> None:
    result = import_table(
        DATA / "sessions_export.csv",
        table="sessions",
        mapping=DATA / "sessions_mapping.yaml",
        tz="UTC",
    )
    t = result.table.set_index("session_id")
    assert result.summary["rows_read"] == result.summary["rows_written"] == 4
    assert result.summary["columns_mapped"] == 9
    assert list(t["room_id"].unique()) == ["007", "012"]  # leading zeros kept
    assert t.loc["S001", "session_type"] == "festival_promo"
    assert t.loc["S003", "session_type"] == "fan_welfare"
    assert t["platform"].eq("douyin").all()
    # 20:00 in Shanghai (the mapping's timezone) is 12:00 UTC
    assert t.loc["S001", "start_time"] == pd.Timestamp("2024-06-18 12:00", tz="UTC")
    assert np.isnan(t.loc["S003", "gmv"])
    assert "备注" not in result.table.columns


def test_generic_unknown_contract_column(tmp_path) -> None:
    mapping = tmp_path / "m.yaml"
    mapping.write_text("columns:\n  room_id: 直播间ID\n  gmv_total: 成交金额(元)\n")
    with pytest.raises(ValueError, match="gmv_total"):
        load_mapping(mapping, "sessions")
    mapping.write_text("columns:\n  room_id: 直播间ID\nrenames: {}\n")
    with pytest.raises(ValueError, match="renames"):
        load_mapping(mapping, "sessions")


def test_generic_missing_source_column(tmp_path) -> None:
    text = (DATA / "sessions_mapping.yaml").read_text(encoding="utf-8")
    mapping = tmp_path / "m.yaml"
    mapping.write_text(text.replace("观看人次", "观看人数"), encoding="utf-8")
    with pytest.raises(ValueError, match="观看人数") as err:
        import_table(DATA / "sessions_export.csv", table="sessions", mapping=mapping, tz=TZ)
    assert "观看人次" in str(err.value)  # the file's columns are listed


def test_generic_bad_value_lists_the_row(tmp_path) -> None:
    lines = (DATA / "sessions_export.csv").read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace(",30000,", ",-30000,")  # negative viewers on file row 4
    export = tmp_path / "export.csv"
    export.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shutil.copy(DATA / "sessions_mapping.yaml", tmp_path / "m.yaml")
    with pytest.raises(ContractError) as err:
        import_table(export, table="sessions", mapping=tmp_path / "m.yaml", tz=TZ)
    failures = err.value.failures
    assert list(failures["row"]) == [4]
    assert list(failures["column"]) == ["viewers"]


def test_generic_without_mapping_needs_contract_names(tmp_path) -> None:
    with pytest.raises(ValueError, match="mapping"):
        import_table(DATA / "sessions_export.csv", table="sessions", mapping=None, tz=TZ)


# --------------------------------------------------------------------------- CLI


def test_cli_imports(chanmama_sample, tmp_path) -> None:
    from livecast.cli import app

    path, _, _ = chanmama_sample
    runner = CliRunner()
    res = runner.invoke(
        app, ["import", "chanmama", str(path), "--year", "2021", "--out", str(tmp_path / "cm")]
    )
    assert res.exit_code == 0, res.output
    sessions = pd.read_parquet(tmp_path / "cm" / "sessions.parquet")
    assert len(sessions) == import_chanmama(path, year=2021, tz=TZ).summary["sessions"]

    res = runner.invoke(
        app,
        [
            "import",
            "transactions",
            str(DATA / "purchases.csv"),
            "--out",
            str(tmp_path / "tx"),
            "--fan-col",
            "fan",
            "--time-col",
            "time",
            "--amount-col",
            "amount",
        ],
    )
    assert res.exit_code == 0, res.output
    events = pd.read_parquet(tmp_path / "tx" / "fan_events.parquet")
    assert len(events) == 5 and events["fan_id"].str.startswith("0").all()


def test_cli_bad_file_exit_code_2(tmp_path) -> None:
    from livecast.cli import app

    bad = tmp_path / "bad.csv"
    bad.write_text("fan,time,amount\n0001,2024-03-01,10\n0002,not a date,12\n")
    res = CliRunner().invoke(
        app,
        [
            "import",
            "transactions",
            str(bad),
            "--out",
            str(tmp_path / "out"),
            "--fan-col",
            "fan",
            "--time-col",
            "time",
            "--amount-col",
            "amount",
        ],
    )
    assert res.exit_code == 2
    assert "not a date" in res.output and "time" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out" / "fan_events.parquet").exists()

    res = CliRunner().invoke(
        app, ["import", "transactions", str(bad), "--out", str(tmp_path / "out")]
    )
    assert res.exit_code == 2
    assert "customer_id" in res.output and "Traceback" not in res.output


def test_docs_mapping_example_is_valid() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "mapping_example.yaml"
    mapping = load_mapping(docs, "sessions")
    assert mapping.constants["platform"] == "douyin"
    assert set(mapping.values["session_type"].values()) <= set(SESSION_TYPES)


# --------------------------------------------------------------------------- generic: repeats

SESSION_HEADER = "session_id,room_id,platform,host_id,start_time,planned_duration_min,session_type"


def _csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def test_generic_verbatim_repeats_kept_once(tmp_path) -> None:
    export = _csv(
        tmp_path / "sessions.csv",
        SESSION_HEADER,
        [
            "S1,007,douyin,h1,2024-06-01 20:00,120,daily",  # row 2
            ",,,,,,",  # row 3: blank
            "S1,007,douyin,h1,2024-06-01 20:00,120,daily",  # row 4: verbatim repeat of row 2
            "S2,007,douyin,h1,2024-06-02 20:00,90,daily",  # row 5
            "S1,007,douyin,h1,2024-06-01 20:00,120,daily",  # row 6: verbatim repeat again
            "S2,007,douyin,h1,2024-06-02 20:00,90,daily",  # row 7: verbatim repeat of row 5
        ],
    )
    result = import_table(export, table="sessions", mapping=None, tz="UTC")
    s = result.summary
    assert s["rows_read"] == 6
    assert s["blank_rows_skipped"] == 1
    assert s["verbatim_repeats_dropped"] == 3
    assert s["duplicate_keys_dropped"] == 0 and s["duplicate_rows_dropped"] == ""
    assert s["rows_written"] == 2
    assert list(result.table["session_id"]) == ["S1", "S2"]
    assert list(result.table["room_id"]) == ["007", "007"]

    # fan_events has no key: identical lines are kept once, events differing in a cell all stay
    events = _csv(
        tmp_path / "events.csv",
        "fan_id,room_id,event_time,event_type",
        [
            "0001,r1,2024-06-01 20:01,like",
            "0001,r1,2024-06-01 20:01,like",
            "0001,r1,2024-06-01 20:02,like",
            "0002,r1,2024-06-01 20:01,like",
        ],
    )
    result = import_table(events, table="fan_events", mapping=None, tz="UTC")
    assert result.summary["verbatim_repeats_dropped"] == 1
    assert result.summary["duplicate_keys_dropped"] == 0
    assert len(result.table) == 3


def _duplicate_sessions(tmp_path: Path) -> Path:
    return _csv(
        tmp_path / "dup.csv",
        SESSION_HEADER,
        [
            "S1,r1,douyin,h1,2024-06-01 20:00,120,daily",  # row 2
            "",  # row 3: blank line, still counts as a file row
            "S2,r1,douyin,h1,2024-06-02 20:00,90,daily",  # row 4
            "S1,r1,douyin,h2,2024-06-03 20:00,60,festival_promo",  # row 5: same key as row 2
            "S3,r1,douyin,h1,2024-06-04 20:00,100,daily",  # row 6
            "S2,r1,douyin,h9,2024-06-05 20:00,30,daily",  # row 7: same key as row 4
            "S2,r1,douyin,h9,2024-06-05 20:00,30,daily",  # row 8: verbatim repeat of row 7
        ],
    )


def test_generic_duplicate_key_error_lists_later_rows(tmp_path) -> None:
    export = _duplicate_sessions(tmp_path)
    with pytest.raises(ContractError) as err:
        import_table(export, table="sessions", mapping=None, tz="UTC")
    failures = err.value.failures
    assert list(failures["row"]) == [5, 7]  # file rows; the first occurrences are not listed
    assert list(failures["column"]) == ["session_id", "session_id"]
    assert list(failures["value"]) == ["S1", "S2"]
    assert "first at row 2" in failures["check"].iloc[0]
    assert "first at row 4" in failures["check"].iloc[1]
    assert failures["check"].str.contains("--on-duplicate keep-first").all()
    assert "field_uniqueness" not in str(err.value)


def test_generic_duplicate_key_keep_first(tmp_path) -> None:
    export = _duplicate_sessions(tmp_path)
    result = import_table(
        export, table="sessions", mapping=None, tz="UTC", on_duplicate="keep-first"
    )
    s = result.summary
    assert s["rows_read"] == 7
    assert s["blank_rows_skipped"] == 1
    assert s["verbatim_repeats_dropped"] == 1
    assert s["duplicate_keys_dropped"] == 2
    assert s["duplicate_rows_dropped"] == "5, 7"
    assert s["rows_written"] == 3
    t = result.table.set_index("session_id")
    assert list(t.index) == ["S1", "S2", "S3"]
    # the first row's values win
    assert t.loc["S1", "host_id"] == "h1" and t.loc["S1", "session_type"] == "daily"
    assert t.loc["S1", "planned_duration_min"] == 120
    assert t.loc["S1", "start_time"] == pd.Timestamp("2024-06-01 20:00", tz="UTC")
    assert t.loc["S2", "host_id"] == "h1" and t.loc["S2", "planned_duration_min"] == 90

    with pytest.raises(ValueError, match="on_duplicate"):
        import_table(export, table="sessions", mapping=None, tz="UTC", on_duplicate="last")  # type: ignore[arg-type]


def test_generic_duplicate_rows_dropped_is_short() -> None:
    from features.importers.generic import list_rows

    assert list_rows([]) == ""
    assert list_rows([4, 9]) == "4, 9"
    long = list_rows(range(2, 102))
    assert long.startswith("2, 3, 4") and long.endswith("... (+80 more)")
    assert len(long) < 120


def test_generic_session_products_duplicate_pair(tmp_path) -> None:
    export = _csv(
        tmp_path / "products.csv",
        "session_id,sku_id,category,list_price,live_price,is_new_launch",
        [
            "S1,K1,beauty,100,80,false",  # row 2
            "S1,K2,beauty,50,40,true",  # row 3
            "S2,K1,beauty,100,70,false",  # row 4: same sku, other session -> fine
            "S1,K1,beauty,120,90,false",  # row 5: (S1, K1) again
        ],
    )
    with pytest.raises(ContractError) as err:
        import_table(export, table="session_products", mapping=None, tz="UTC")
    failures = err.value.failures
    assert list(failures["row"]) == [5]
    assert failures["column"].iloc[0] == "session_id, sku_id"
    assert failures["value"].iloc[0] == ("S1", "K1")
    assert "duplicate (session_id, sku_id) (first at row 2)" in failures["check"].iloc[0]

    result = import_table(
        export, table="session_products", mapping=None, tz="UTC", on_duplicate="keep-first"
    )
    assert result.summary["duplicate_keys_dropped"] == 1
    assert result.summary["duplicate_rows_dropped"] == "5"
    t = result.table.set_index(["session_id", "sku_id"])
    assert len(t) == 3
    assert t.loc[("S1", "K1"), "list_price"] == 100
    assert t.loc[("S1", "K1"), "live_price"] == 80


def test_cli_import_table_duplicates(tmp_path) -> None:
    from livecast.cli import app

    export = _duplicate_sessions(tmp_path)
    out = tmp_path / "out"
    args = ["import", "table", str(export), "--table", "sessions", "--out", str(out)]
    runner = CliRunner()

    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    assert "2 row/column failure(s)" in " ".join(res.output.split())  # rich wraps long paths
    assert "duplicate session_id" in res.output and "'S1'" in res.output and "'S2'" in res.output
    assert any(line.split("│")[1].strip() == "5" for line in res.output.splitlines() if "│" in line)
    assert not (out / "sessions.parquet").exists()

    res = runner.invoke(app, [*args, "--on-duplicate", "keep-first"])
    assert res.exit_code == 0, res.output
    assert "duplicate_rows_dropped" in res.output
    written = pd.read_parquet(out / "sessions.parquet")
    assert list(written["session_id"]) == ["S1", "S2", "S3"]
    assert list(written["host_id"]) == ["h1", "h1", "h1"]

    res = runner.invoke(app, [*args, "--on-duplicate", "last"])
    assert res.exit_code == 2
    assert "Invalid value" in res.output and "Traceback" not in res.output


def _quirky_export() -> pd.DataFrame:
    """A hand-built Chanmama export with the quirks of real ones: aborted restarts (at the
    same minute, a few minutes before, and one with no broadcast near it), a verbatim repeat,
    blank rows, two real broadcasts of one host at the same minute, and a product count."""

    def row(name, title, start, duration, views, gmv="", products="", units=""):
        return {
            "Name_of_the_livestream": title,
            "Start_time": start,
            "Duration": duration,
            "Views": views,
            "Total_sales_amount": gmv,
            "Number_of_products": products,
            "Number_of_goods_sold": units,
            "Per_customer_transaction": "",
            "Name": name,
        }

    rows = [
        row("Host A", "好物特卖", "08-13 11:50", "14小时24分钟57秒", "5937410", "12814573.13", "89",
            "118808"),
        row("Host A", "年轻主播", "08-13 11:50", "11秒", "0"),  # same minute, other title
        row("Host A", "好物特卖", "08-12 11:48", "8分钟6秒", "0", "0"),  # 8 min before
        row("Host A", "好物特卖", "08-12 11:56", "6小时13分钟", "1650878", "3157896.63", "64",
            "37274"),
        row("Host A", "好物特卖", "08-12 11:56", "6小时13分钟", "1650878", "3157896.63", "64",
            "37274"),  # verbatim repeat
        row("Host B", "超长待机", "08-11 15:53", "2秒", "0"),  # aborted, nothing near it
        row("Host B", "超长待机", "08-12 19:01", "6小时20分钟", "8466395", "12066870", "95",
            "68945"),
        row("Host B", "第二个直播间", "08-12 19:01", "2小时", "10000", "5000", "3", "40"),
        row("Host B", "无商品", "08-10 19:00", "1小时", "2000"),  # no products, no GMV: kept
    ]  # fmt: skip
    blank = dict.fromkeys(rows[0], "")
    return pd.DataFrame([*rows[:3], blank, *rows[3:5], blank, blank, *rows[5:]], dtype=object)


def test_chanmama_real_export_quirks(tmp_path) -> None:
    path = tmp_path / "export.xlsx"
    _quirky_export().to_excel(path, index=False, engine="openpyxl")
    result = import_chanmama(path, year=2021, tz=TZ)
    table, summary = result.table, result.summary
    assert summary["rows_read"] == 12
    assert summary["empty_rows_skipped"] == 3
    assert summary["verbatim_repeats_dropped"] == 1
    assert summary["restarts_folded"] == 2
    assert summary["aborted_starts_dropped"] == 1
    # the file row of the lone aborted start (header is row 1)
    assert summary["aborted_rows"] == "10"
    assert summary["same_start_renumbered"] == 1
    # every row is accounted for: sessions + blank + repeats + folded + dropped
    assert len(table) + 3 + 1 + 2 + 1 == summary["rows_read"]
    assert summary["sessions"] == len(table) == 5
    assert table["session_id"].is_unique
    a = table[table["host_id"] == "host-a"].set_index("session_id")
    assert a.loc["host-a-20210813-1150", "viewers"] == 5937410
    assert a.loc["host-a-20210813-1150", "restarts_folded"] == 1
    assert a.loc["host-a-20210812-1156", "restarts_folded"] == 1
    b = table[table["host_id"] == "host-b"].set_index("session_id")
    assert b.loc["host-b-20210812-1901", "viewers"] == 8466395
    assert b.loc["host-b-20210812-1901-2", "viewers"] == 10000
    assert np.isnan(b.loc["host-b-20210810-1900", "gmv"])
    # the export's product count is the contract's n_products
    assert a.loc["host-a-20210813-1150", "n_products"] == 89
    assert np.isnan(b.loc["host-b-20210810-1900", "n_products"])


def test_product_count_feeds_the_mix_when_there_are_no_product_rows(tmp_path) -> None:
    from features.sessions import build_session_features

    path = tmp_path / "export.xlsx"
    _quirky_export().to_excel(path, index=False, engine="openpyxl")
    sessions = import_chanmama(path, year=2021, tz=TZ).table
    products = pd.DataFrame(columns=["session_id", "sku_id", "category", "list_price",
                                     "live_price", "stock", "is_new_launch"])  # fmt: skip
    frame = build_session_features(sessions, products).set_index("session_id")
    assert frame.loc["host-a-20210813-1150", "mix__n_skus"] == 89
    assert np.isnan(frame.loc["host-b-20210810-1900", "mix__n_skus"])
    # the room's product history: this session's count against the room's earlier ones
    later = frame.loc["host-a-20210813-1150", "room__products_ratio"]
    assert later == pytest.approx(np.log1p(89) - np.log1p(64))
