"""Session features at scale: the vectorised history state gives exactly the values of a
straightforward per-row reference (the implementation the scale work replaced)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import features.sessions as fs
from features.contract import CATEGORIES

# --------------------------------------------------------------------------- references


class ReferenceAsOf:
    """The as-of table as a per-group dict of Python tuples (the replaced implementation)."""

    def __init__(self, stats: pd.DataFrame, by: list[str], columns: list[str]) -> None:
        right = stats.drop_duplicates([*by, "_t"], keep="last")[[*by, "_t", *columns]]
        right = right.sort_values([*by, "_t"], kind="stable").reset_index(drop=True)
        self.by, self.columns = list(by), list(columns)
        self._numeric = [
            pd.api.types.is_numeric_dtype(right[c])
            and not isinstance(right[c].dtype, pd.CategoricalDtype)
            for c in by
        ]
        self._t = right["_t"].to_numpy(dtype=np.int64)
        self._values = right[self.columns].to_numpy(dtype=float)
        self._slices: dict[tuple, tuple[int, int]] = {}
        for i, key in enumerate(self._keys([right[c].to_numpy() for c in by])):
            start, _ = self._slices.get(key, (i, i))
            self._slices[key] = (start, i + 1)

    def _keys(self, arrays: list[object]) -> list[tuple]:
        cols = [
            np.asarray(a).astype(np.int64).tolist() if num else [str(v) for v in np.asarray(a)]
            for a, num in zip(arrays, self._numeric, strict=True)
        ]
        return list(zip(*cols, strict=True))

    def lookup(self, keys: list[object], t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.int64)
        out = np.full((len(t), len(self.columns)), np.nan)
        for i, key in enumerate(self._keys(keys)):
            span = self._slices.get(key)
            if span is None:
                continue
            pos = np.searchsorted(self._t[span[0] : span[1]], t[i], side="left") - 1
            if pos >= 0:
                out[i] = self._values[span[0] + pos]
        return out

    def lookup_blocks(self, keys, times, bounds):
        """:meth:`lookup` of each block, the rows with an earlier row reported."""
        keys = [k.values[k.index] if isinstance(k, fs.Gathered) else np.asarray(k) for k in keys]
        for start, stop in bounds:
            rows = slice(start, stop)
            out = self.lookup([k[rows] for k in keys], times(rows))
            found = np.flatnonzero(~np.isnan(out[:, 0]))
            yield rows, found, out[found]


def reference_topic_columns(session_type: np.ndarray, title: np.ndarray) -> fs.Columns:
    """Every title read on its own (no de-duplication)."""
    titles = [str(t) for t in title]
    cols: fs.Columns = {"topic__session_type": session_type}
    for flag, pattern in fs._KEYWORD_PATTERNS.items():
        cols[f"topic__kw_{flag}"] = np.array(
            [pattern.search(t) is not None for t in titles], dtype=float
        )
    cols["topic__title_len"] = np.array([len(t) for t in titles], dtype=float)
    return cols


def reference_category_codes(category: object) -> np.ndarray:
    code = {c: i for i, c in enumerate(CATEGORIES)}
    return np.array([code.get(str(c), -1) for c in np.asarray(category)], dtype=np.int64)


def reference_sku_list(
    products: pd.DataFrame | None, session_ids: np.ndarray, keys: object = None
) -> fs.SkuList:
    """Session positions by an index lookup, SKU ids as an object array of strings."""
    if products is None or len(products) == 0:
        return fs.SkuList(np.zeros(0, dtype=np.int64), np.array([], dtype=object))
    pos = pd.Index(session_ids).get_indexer(products["session_id"].astype(str))
    keep = pos >= 0
    sku = np.array([str(v) for v in products["sku_id"].astype(str)[keep]], dtype=object)
    return fs.SkuList(pos[keep].astype(np.int64), sku)


def reference_sku_history(
    history: pd.DataFrame, products: pd.DataFrame, keys: object = None
) -> ReferenceAsOf | None:
    """A string merge and a string group-by (the replaced implementation)."""
    if products is None or "units_sold" not in products.columns:
        return None
    hs = history[["session_id", "room_id", "start_time"]].assign(
        session_id=lambda d: d["session_id"].astype(str), room_id=lambda d: d["room_id"].astype(str)
    )
    hp = products[["session_id", "sku_id", "units_sold"]].copy()
    hp["session_id"] = hp["session_id"].astype(str)
    hp = hp[hp["units_sold"].notna()].merge(hs, on="session_id", how="inner")
    hp["sku_id"] = hp["sku_id"].astype(str)
    hp["_t"] = fs._epoch_ns(hp["start_time"])
    hp["_log"] = np.log1p(hp["units_sold"].astype(float))
    g = (
        hp.groupby(["room_id", "sku_id", "_t"], sort=True)
        .agg(n=("units_sold", "size"), u=("units_sold", "sum"), lg=("_log", "sum"))
        .reset_index()
    )
    g[["cn", "cu", "clg"]] = g.groupby(["room_id", "sku_id"])[["n", "u", "lg"]].cumsum()
    return ReferenceAsOf(g, ["room_id", "sku_id"], ["cn", "cu", "clg"])


@pytest.fixture
def reference(monkeypatch):
    """Swap the scale-tuned pieces of ``features.sessions`` for the references."""

    def use() -> None:
        monkeypatch.setattr(fs, "AsOfTable", ReferenceAsOf)
        monkeypatch.setattr(fs, "topic_columns", reference_topic_columns)
        monkeypatch.setattr(fs, "_category_codes", reference_category_codes)
        monkeypatch.setattr(fs, "sku_list", reference_sku_list)
        monkeypatch.setattr(fs, "sku_history", reference_sku_history)

    return use


# --------------------------------------------------------------------------- as-of table


def _random_stats(rng: np.random.Generator, n: int) -> pd.DataFrame:
    rooms = np.array([f"r{i}" for i in range(7)], dtype=object)
    return pd.DataFrame(
        {
            "room_id": rooms[rng.integers(0, len(rooms), n)],
            "band": rng.integers(0, 4, n).astype(np.int64),
            "_t": rng.integers(0, 40, n).astype(np.int64) * 1000,  # many ties
            "a": rng.normal(size=n),
            "b": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
        }
    )


def _queries(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rooms = np.array([f"r{i}" for i in range(9)], dtype=object)  # r7, r8: not in the table
    room = rooms[rng.integers(0, len(rooms), n)]
    band = rng.integers(0, 5, n).astype(np.int64)  # band 4: not in the table
    t = rng.integers(-1, 42, n).astype(np.int64) * 1000  # before, on and after table times
    return room, band, t


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_asof_lookup_equals_the_per_row_reference(seed):
    rng = np.random.default_rng(seed)
    stats = _random_stats(rng, 600)
    room, band, t = _queries(rng, 900)
    for by, keys in ((["room_id"], [room]), (["room_id", "band"], [room, band])):
        got = fs.AsOfTable(stats, by, ["a", "b"]).lookup(keys, t)
        want = ReferenceAsOf(stats, by, ["a", "b"]).lookup(keys, t)
        np.testing.assert_array_equal(got, want)
        assert np.isfinite(got[:, 0]).any() and np.isnan(got[:, 0]).any()


@pytest.mark.parametrize("key_limit", [fs._KEY_LIMIT, 500])  # 500: groups renumbered
def test_asof_lookup_query_by_query_equals_the_reference(monkeypatch, key_limit):
    """A plan or two (looked up query by query) and many queries (vectorised) read the same
    rows, with the table's groups as they are or renumbered."""
    monkeypatch.setattr(fs, "_KEY_LIMIT", key_limit)
    rng = np.random.default_rng(9)
    stats = _random_stats(rng, 400)
    # some (room, band) groups absent: renumbered groups are not the mixed-radix ones
    stats = stats[(stats["room_id"].str[1:].astype(int) + stats["band"]) % 3 != 0]
    room, band, t = _queries(rng, 60)
    assert len(t) > fs._FEW_QUERIES
    for by, keys in ((["room_id"], [room]), (["room_id", "band"], [room, band])):
        table = fs.AsOfTable(stats, by, ["a", "b"])
        assert (table._dense is not None) == (key_limit == 500 and len(by) == 2)
        want = ReferenceAsOf(stats, by, ["a", "b"]).lookup(keys, t)
        np.testing.assert_array_equal(table.lookup(keys, t), want)
        for i in range(len(t)):
            one = table.lookup([k[i : i + 1] for k in keys], t[i : i + 1])
            np.testing.assert_array_equal(one, want[i : i + 1])
        assert np.isfinite(want[:, 0]).any() and np.isnan(want[:, 0]).any()


def test_asof_lookup_with_categorical_and_non_string_keys():
    rng = np.random.default_rng(5)
    stats = _random_stats(rng, 300)
    room, band, t = _queries(rng, 400)
    table = stats.assign(room_id=pd.Categorical(stats["room_id"]))
    cat_room = pd.Categorical(room, categories=[*sorted(set(room)), "r99"])
    got = fs.AsOfTable(table, ["room_id", "band"], ["a"]).lookup([cat_room, band], t)
    want = ReferenceAsOf(stats, ["room_id", "band"], ["a"]).lookup([room, band], t)
    np.testing.assert_array_equal(got, want)
    # non-numeric keys compare as strings: an int key finds the string "3"
    ints = pd.DataFrame({"k": np.array(["3", "4"], dtype=object), "_t": [0, 0], "v": [1.0, 2.0]})
    got = fs.AsOfTable(ints, ["k"], ["v"]).lookup([np.array([3, 4, 5], dtype=object)], [1, 1, 1])
    np.testing.assert_array_equal(got[:, 0], [1.0, 2.0, np.nan])


def test_asof_empty_table_and_empty_queries():
    empty = pd.DataFrame(
        {"k": pd.Series([], dtype=object), "_t": pd.Series([], dtype=np.int64), "v": []}
    )
    out = fs.AsOfTable(empty, ["k"], ["v"]).lookup([np.array(["x"], dtype=object)], [5])
    assert out.shape == (1, 1) and np.isnan(out).all()
    table = fs.AsOfTable(pd.DataFrame({"k": ["x"], "_t": [1], "v": [1.0]}), ["k"], ["v"])
    assert table.lookup([np.array([], dtype=object)], np.array([], dtype=np.int64)).shape == (0, 1)


# --------------------------------------------------------------------------- whole features


@pytest.fixture(scope="module")
def data():
    from features.simulate import simulate

    return simulate(seed=3, rooms=6, days=150, fans=0)


def _split(ds):
    s, p = ds.sessions, ds.session_products
    cut = s["start_time"].quantile(0.7)
    old, new = s[s["start_time"] < cut], s[s["start_time"] >= cut]
    return (
        new,
        p[p["session_id"].isin(set(new["session_id"]))],
        old,
        p[p["session_id"].isin(set(old["session_id"]))],
    )


def test_training_features_equal_the_reference(data, reference):
    s, p = data.sessions, data.session_products
    got = fs.build_session_features(s, p)
    got_snapshot = fs.snapshot_session_features(*_split(data))
    reference()
    want = fs.build_session_features(s, p)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    pd.testing.assert_frame_equal(
        got_snapshot, fs.snapshot_session_features(*_split(data)), check_exact=True
    )
    assert got["room__sku_hist_share"].gt(0).any() and got["room__n_prior"].gt(0).any()


def test_shared_sku_ids_across_rooms_and_tied_starts_equal_the_reference(data, reference):
    """The same SKU id in two rooms and two sessions of a room starting together."""
    s = data.sessions.copy()
    p = data.session_products.copy()
    p["sku_id"] = p["sku_id"].str.split("-").str[-1]  # ids shared between rooms
    # each room's 5th and 6th sessions start together (with history before them)
    pair = s.sort_values("start_time").groupby("room_id").nth([4, 5])
    s.loc[pair.index, "start_time"] = pair.groupby("room_id")["start_time"].transform("min")
    got = fs.build_session_features(s, p)
    reference()
    want = fs.build_session_features(s, p)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert p.groupby("sku_id")["session_id"].nunique().gt(1).any()
    tied = got.groupby(["room_id", "start_time"]).size().gt(1)
    assert tied.any()


def test_plan_features_equal_the_reference(data, reference):
    from features.plan import ProductLine, SessionPlan

    s, p = data.sessions, data.session_products
    last = s.sort_values("start_time").groupby("room_id").tail(1)
    sku = p[p["session_id"].isin(last["session_id"])].groupby("session_id").head(3)
    plans = []
    for i, row in enumerate(last.itertuples()):
        lines = sku[sku["session_id"] == row.session_id]
        plans.append(
            SessionPlan(
                session_id=f"plan-{i}",
                room_id=row.room_id,
                platform=row.platform,
                start_time=row.start_time + pd.Timedelta(days=1),
                planned_duration_min=120,
                session_type="daily",
                title="双11 宠粉福利 秒杀",
                products=[
                    ProductLine(
                        sku_id=str(line.sku_id),
                        category=str(line.category),
                        list_price=float(line.list_price),
                        live_price=float(line.live_price),
                    )
                    for line in lines.itertuples()
                ],
            )
        )
    got = fs.plan_features(plans, s, p)
    reference()
    want = fs.plan_features(plans, s, p)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert got["room__sku_hist_share"].gt(0).any()


def test_asof_lookup_in_blocks_equals_one_pass(monkeypatch):
    rng = np.random.default_rng(7)
    stats = _random_stats(rng, 500)
    room, band, t = _queries(rng, 700)
    table = fs.AsOfTable(stats, ["room_id", "band"], ["a", "b"])
    whole = table.lookup([room, band], t)
    monkeypatch.setattr(fs, "_LOOKUP_BLOCK", 64)
    cat_room = pd.Categorical(room)
    np.testing.assert_array_equal(table.lookup([room, band], t), whole)
    np.testing.assert_array_equal(table.lookup([cat_room, band], t), whole)


def test_search_equals_numpy_searchsorted():
    rng = np.random.default_rng(3)
    haystack = np.sort(rng.integers(0, 50_000, 20_000))
    for needles, repeats in ((rng.integers(-5, 50_010, 30_000), False),
                             (rng.integers(0, 300, 30_000) * 170, True)):  # fmt: skip
        for side in ("left", "right"):
            got = fs._search(haystack, needles, side, repeats=repeats)
            np.testing.assert_array_equal(got, np.searchsorted(haystack, needles, side))


# --------------------------------------------------------------------------- model fit


def test_base_statistics_by_block_and_column_equal_numpy(monkeypatch):
    """The base's column statistics, computed by blocks of rows or column by column to save
    memory, are numpy's whole-matrix values bit for bit."""
    import training.models as tm

    rng = np.random.default_rng(11)
    D = rng.normal(size=(5_000, 9)) * 10.0 ** rng.integers(-4, 5, size=(5_000, 9))
    monkeypatch.setattr(tm, "_BLOCK_ROWS", 256)
    np.testing.assert_array_equal(tm._column_std(D), D.std(axis=0))
    np.testing.assert_array_equal(tm._column_std(D[:, :1]), D[:, :1].std(axis=0))
    M = np.where(rng.random(D.shape) < 0.1, np.nan, D)
    mask = np.array([True, False, True, True, False, True, True, True, False])
    with np.errstate(all="ignore"):
        stats = ((np.nanquantile, (0.01,)), (np.nanquantile, (0.99,)), (np.nanmin, ()))
        for fn, args in (*stats, (np.nanmedian, ())):  # 5,000 rows: numpy's per-column median
            want = fn(M[:, mask], *args, axis=0)
            np.testing.assert_array_equal(tm._by_column(fn, M, mask, *args), want)


def test_base_fit_and_predict_by_blocks_equal_one_block(monkeypatch):
    """Blocks of rows change no coefficient and no forecast of the log-linear base."""
    import training.models as tm

    rng = np.random.default_rng(12)
    n = 2_000
    X = pd.DataFrame(
        {
            "a": np.exp(rng.normal(3, 1, n)),
            "b": np.where(rng.random(n) < 0.2, np.nan, rng.normal(size=n)),
            "c": pd.Categorical(rng.choice(["x", "y", "z"], n), categories=["x", "y", "z"]),
        }
    )
    y = rng.normal(size=n)
    args = (np.array([0, 0, 3]), np.array([True, False, True]), 10.0, 0.01)
    one = tm.LogLinear.fit(X, y, *args)
    monkeypatch.setattr(tm, "_BLOCK_ROWS", 128)
    blocks = tm.LogLinear.fit(X, y, *args)
    for name in ("coef", "center", "fill", "lower", "upper"):
        np.testing.assert_array_equal(getattr(blocks, name), getattr(one, name))
    assert blocks.intercept == one.intercept
    np.testing.assert_array_equal(blocks.predict(X), one.predict(X))
    np.testing.assert_array_equal(blocks.contributions(X), one.contributions(X))


def test_lightgbm_settings_change_only_above_the_scale_rows():
    import training.models as tm

    params = tm.ForecastParams()
    assert tm.fit_lgb_params(params, tm.SCALE_ROWS) == params.lgb_params()
    assert tm.fit_lgb_params(params, 22_515) == params.lgb_params()
    big = tm.fit_lgb_params(params, 1_000_000)
    assert params.learning_rate < big["learning_rate"] <= tm.MAX_SCALED_RATE
    assert big["bagging_fraction"] * 1_000_000 * (1 + params.cold_start_share) == pytest.approx(
        tm.BAG_ROWS
    )
    mid = tm.fit_lgb_params(params, 4 * tm.SCALE_ROWS)
    assert mid["learning_rate"] == pytest.approx(2 * params.learning_rate)
    fast = params.model_copy(update={"learning_rate": 0.4})
    assert tm.fit_lgb_params(fast, 1_000_000)["learning_rate"] == 0.4


def test_sku_track_record_by_session_blocks_equals_one_block(data, monkeypatch):
    """SKU rows looked up block by block (blocks never split a session) give the same sums."""
    s, p = data.sessions, data.session_products
    whole = fs.build_session_features(s, p)
    monkeypatch.setattr(fs, "_LOOKUP_BLOCK", 50)
    assert len(fs._session_blocks(np.repeat(np.arange(40), 7))) > 1
    assert fs._session_blocks(np.tile(np.arange(40), 7)) == [(0, 280)]  # sessions apart
    pd.testing.assert_frame_equal(fs.build_session_features(s, p), whole, check_exact=True)
