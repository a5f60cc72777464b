"""BTYD models (features/btyd.py) against independent references.

* the full CDNOW master file, weekly, against the ``lifetimes`` 0.11.3 BG/NBD estimates;
* direct numerical double integrals of the individual-level likelihoods over the mixing
  distributions, and the papers' closed forms (with scipy's ``hyp2f1``) where that is accurate;
* parameter recovery and conditional expectations / P(alive) against seeded simulations;
* input validation, determinism, shapes and the extreme region.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, special

from features.btyd import BGNBD, ParetoNBD, fit_bg_nbd, fit_pareto_nbd
from tests.conftest import shared_file

# --------------------------------------------------------------------------- helpers


def _sim_pareto_nbd(rng, n, r, alpha, s, beta, T, t_hold):
    """Continuous-time Pareto/NBD customers; returns x, t_x, T, holdout purchases, alive at T."""
    lam = rng.gamma(r, 1.0 / alpha, n)
    mu = rng.gamma(s, 1.0 / beta, n)
    death = rng.exponential(1.0 / mu)
    span = np.minimum(death, T)
    x = rng.poisson(lam * span).astype(float)
    # the last of x uniform purchase times on [0, span]
    t_x = np.where(x > 0, span * rng.random(n) ** (1.0 / np.maximum(x, 1.0)), 0.0)
    y = rng.poisson(lam * np.clip(np.minimum(death, T + t_hold) - T, 0.0, None))
    return x, t_x, T, y.astype(float), death > T


def _sim_bg_nbd(rng, n, r, alpha, a, b, T, t_hold):
    """Continuous-time BG/NBD customers (dropout right after the J-th repeat purchase)."""
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    J = rng.geometric(p)  # repeat purchases up to and including the last one
    N = rng.poisson(lam * T)  # purchases by T had the customer never dropped out
    x = np.minimum(J, N)
    # time of the x-th of N uniform purchase times on [0, T]
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), np.maximum(N - x + 1, 1)), 0.0)
    alive = J > N
    y = np.where(alive, np.minimum(rng.poisson(lam * t_hold), J - N), 0)
    return x.astype(float), t_x, T, y.astype(float), alive


def _log_sigmoid(v: float) -> float:
    return -math.log1p(math.exp(-v)) if v > 0 else v - math.log1p(math.exp(v))


def _pareto_double_integral(m: ParetoNBD, x: float, t_x: float, T: float, scale: float) -> float:
    """log of int int L(lambda, mu | x, t_x, T) g(lambda) g(mu) over log-lambda, log-mu.

    L = lambda^x mu/(lambda+mu) e^-(lambda+mu)t_x + lambda^(x+1)/(lambda+mu) e^-(lambda+mu)T.
    ``scale`` only rescales the integrand to avoid underflow; it is added back.
    """
    r, al, s, be = m.r, m.alpha, m.s, m.beta
    cu = r * math.log(al) - math.lgamma(r)
    cv = s * math.log(be) - math.lgamma(s)

    def f(v: float, u: float) -> float:
        lam, mu = math.exp(u), math.exp(v)
        a = x * u + v - math.log(lam + mu) - (lam + mu) * t_x
        b = (x + 1) * u - math.log(lam + mu) - (lam + mu) * T
        hi = max(a, b)
        log_l = hi + math.log(math.exp(a - hi) + math.exp(b - hi))
        return math.exp(log_l + cu + r * u - al * lam + cv + s * v - be * mu - scale)

    u_lo, u_hi = -40.0 / r - 5.0, math.log((r + x + 80.0) / al)
    v_lo, v_hi = -40.0 / s - 5.0, math.log((s + 80.0) / be)
    val, _ = integrate.dblquad(f, u_lo, u_hi, v_lo, v_hi, epsabs=0, epsrel=1e-9)
    return math.log(val) + scale


def _bg_double_integral(m: BGNBD, x: float, t_x: float, T: float, scale: float) -> float:
    """log of int int L(lambda, p | x, t_x, T) g(lambda) f(p) over log-lambda and logit-p.

    L = (1-p)^x lambda^x e^-lambda T + [x > 0] p (1-p)^(x-1) lambda^x e^-lambda t_x.
    """
    r, al, a, b = m.r, m.alpha, m.a, m.b
    cu = r * math.log(al) - math.lgamma(r)
    cp = -(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))

    def f(v: float, u: float) -> float:
        lam = math.exp(u)
        lp, l1p = _log_sigmoid(v), _log_sigmoid(-v)
        alive = x * l1p + x * u - lam * T
        if x > 0:
            dead = lp + (x - 1) * l1p + x * u - lam * t_x
            hi = max(alive, dead)
            log_l = hi + math.log(math.exp(alive - hi) + math.exp(dead - hi))
        else:
            log_l = alive
        return math.exp(log_l + cu + r * u - al * lam + cp + a * lp + b * l1p - scale)

    u_lo, u_hi = -40.0 / r - 5.0, math.log((r + x + 80.0) / al)
    val, _ = integrate.dblquad(
        f, u_lo, u_hi, -40.0 / a - 5.0, 40.0 / b + 5.0, epsabs=0, epsrel=1e-9
    )
    return math.log(val) + scale


def _pareto_paper_ll(m: ParetoNBD, x, t_x, T):
    """Fader & Hardie's closed form with the A0 hypergeometric difference (scipy hyp2f1)."""
    r, al, s, be = m.r, m.alpha, m.s, m.beta
    n = r + s + x
    if al >= be:
        z = lambda t: (al - be) / (al + t)  # noqa: E731
        f = lambda t: special.hyp2f1(n, s + 1.0, n + 1.0, z(t)) / (al + t) ** n  # noqa: E731
    else:
        z = lambda t: (be - al) / (be + t)  # noqa: E731
        f = lambda t: special.hyp2f1(n, r + x, n + 1.0, z(t)) / (be + t) ** n  # noqa: E731
    a0 = f(t_x) - f(T)
    head = special.gammaln(r + x) - special.gammaln(r) + r * np.log(al) + s * np.log(be)
    return head + np.log(1.0 / ((al + T) ** (r + x) * (be + T) ** s) + s / n * a0)


def _pareto_paper_expectation(m: ParetoNBD, t, x, t_x, T):
    """The note's E[Y(t) | x, t_x, T] (needs s != 1)."""
    r, al, s, be = m.r, m.alpha, m.s, m.beta
    log_num = (
        special.gammaln(r + x)
        - special.gammaln(r)
        + r * np.log(al)
        + s * np.log(be)
        - (r + x) * np.log(al + T)
        - s * np.log(be + T)
    )
    p_alive = np.exp(log_num - _pareto_paper_ll(m, x, t_x, T))
    ratio = (r + x) * (be + T) / ((al + T) * (s - 1.0))
    return p_alive * ratio * (1.0 - ((be + T) / (be + T + t)) ** (s - 1.0))


def _bg_paper_expectation(m: BGNBD, t, x, t_x, T):
    """Fader, Hardie & Lee (2005) eq. 10 with scipy's hyp2f1 (needs a != 1)."""
    r, al, a, b = m.r, m.alpha, m.a, m.b
    z = t / (al + T + t)
    h = special.hyp2f1(r + x, b + x, a + b + x - 1.0, z)
    num = (a + b + x - 1.0) / (a - 1.0) * (1.0 - ((al + T) / (al + T + t)) ** (r + x) * h)
    den = 1.0 + (x > 0) * a / (b + np.maximum(x, 1) - 1.0) * ((al + T) / (al + t_x)) ** (r + x)
    return num / den


# ------------------------------------------------------------------- 1. CDNOW


@pytest.fixture(scope="module")
def cdnow():
    """Weekly calibration summary (to 1997-09-30) and 39-week holdout counts of CDNOW.

    Built like ``lifetimes`` 0.11.3 ``calibration_and_holdout_data(..., freq="W")``: calibration
    transactions are those dated <= 1997-09-30, dates become pandas weekly periods
    (``to_period("W")``), purchases within one period collapse to one, frequency = distinct
    periods - 1, recency = last - first period, T = period(1997-09-30) - first period. Holdout
    counts are distinct (customer, week) pairs dated in (1997-09-30, 1998-06-30]; the holdout
    lasts period(1998-06-30) - period(1997-09-30) = 39 weeks.
    """
    path = shared_file("cdnow", "CDNOW_master.txt")
    raw = pd.read_csv(path, sep=r"\s+", dtype={"customer_id": str})
    assert list(raw.columns) == ["customer_id", "date", "number_of_cds", "dollar_value"]
    date = pd.to_datetime(raw["date"].astype(str), format="%Y%m%d")
    week = pd.PeriodIndex(date, freq="W").asi8
    tx = pd.DataFrame({"customer_id": raw["customer_id"], "date": date, "week": week})
    cal_end, obs_end = pd.Timestamp("1997-09-30"), pd.Timestamp("1998-06-30")
    cal = tx[tx["date"] <= cal_end].drop_duplicates(["customer_id", "week"])
    per = cal.groupby("customer_id")["week"].agg(["min", "max", "count"])
    end_week = pd.Period(cal_end, freq="W").ordinal
    x = (per["count"] - 1).to_numpy(float)
    t_x = (per["max"] - per["min"]).to_numpy(float)
    T = (end_week - per["min"]).to_numpy(float)
    hold = tx[(tx["date"] > cal_end) & (tx["date"] <= obs_end)]
    hold = hold.drop_duplicates(["customer_id", "week"])
    holdout = hold.groupby("customer_id").size().reindex(per.index, fill_value=0)
    weeks = pd.Period(obs_end, freq="W").ordinal - end_week
    return x, t_x, T, holdout.to_numpy(float), weeks


@pytest.mark.shared
def test_cdnow_weekly_fits_match_lifetimes_and_the_holdout(cdnow):
    x, t_x, T, holdout, weeks = cdnow
    assert len(x) == 23_570 and weeks == 39
    assert T.min() == 27 and T.max() == 39  # everyone joined in Jan-Mar 1997

    bg = fit_bg_nbd(x, t_x, T)
    reference = {"r": 0.284, "alpha": 6.725, "a": 0.708, "b": 2.372}  # lifetimes 0.11.3
    for name, want in reference.items():
        assert getattr(bg, name) == pytest.approx(want, rel=0.05), name
    # in fact it agrees to the printed digits
    for name, want in reference.items():
        assert getattr(bg, name) == pytest.approx(want, abs=6e-4), name

    pn = fit_pareto_nbd(x, t_x, T)
    assert all(math.isfinite(v) and v > 0 for v in pn.to_dict().values())
    # recorded: r 0.6168, alpha 14.47, s 0.7551, beta 20.14
    assert pn.to_dict() == pytest.approx(
        {"r": 0.6168, "alpha": 14.47, "s": 0.7551, "beta": 20.14}, rel=2e-3
    )
    ll_bg = bg.log_likelihood(x, t_x, T).sum()
    ll_pn = pn.log_likelihood(x, t_x, T).sum()
    assert ll_pn > ll_bg + 50  # -91496.2 vs -91572.6: the Pareto/NBD fits these data better

    # 39-week holdout: 18,440 actual repeat purchase-weeks. BG/NBD predicts 16,507 (-10.5 %),
    # Pareto/NBD 15,183 (-17.7 %): only the BG/NBD is inside 15 %.
    actual = holdout.sum()
    pred_bg = bg.expected_purchases(weeks, x, t_x, T).sum()
    pred_pn = pn.expected_purchases(weeks, x, t_x, T).sum()
    assert actual == 18_440
    assert abs(pred_bg / actual - 1) < 0.15
    assert abs(pred_pn / actual - 1) < 0.20
    assert pred_pn < pred_bg < actual
    # per customer the predictions rank the holdout buyers well above chance
    for pred in (
        bg.expected_purchases(weeks, x, t_x, T),
        pn.expected_purchases(weeks, x, t_x, T),
    ):
        assert np.corrcoef(pred, holdout)[0, 1] > 0.5


# --------------------------------------------- 2. likelihoods vs double integrals

PARETO_MODELS = [
    ParetoNBD(r=0.55, alpha=10.58, s=0.61, beta=11.67),  # alpha < beta (CDNOW sample values)
    ParetoNBD(r=1.3, alpha=4.0, s=0.4, beta=30.0),  # alpha << beta
    ParetoNBD(r=0.3, alpha=25.0, s=2.5, beta=3.0),  # alpha > beta
    ParetoNBD(r=0.8, alpha=7.0, s=1.0, beta=7.0),  # alpha == beta, s == 1
]
POINTS = [(0, 0.0, 30.0), (1, 5.0, 30.0), (4, 20.5, 38.0), (10, 37.0, 39.0)]


@pytest.mark.parametrize("model", PARETO_MODELS, ids=lambda m: f"a{m.alpha}-b{m.beta}")
def test_pareto_likelihood_equals_double_integral(model):
    for x, t_x, T in POINTS:
        ours = float(model.log_likelihood(x, t_x, T))
        ref = _pareto_double_integral(model, x, t_x, T, scale=ours)
        assert ours == pytest.approx(ref, rel=1e-7, abs=1e-7), (x, t_x, T)


@pytest.mark.parametrize(
    "model",
    [BGNBD(r=0.24, alpha=4.41, a=0.79, b=2.43), BGNBD(r=1.5, alpha=3.0, a=2.5, b=0.6)],
    ids=["cdnow-like", "a>1,b<1"],
)
def test_bg_likelihood_equals_double_integral(model):
    for x, t_x, T in POINTS[1:]:
        ours = float(model.log_likelihood(x, t_x, T))
        ref = _bg_double_integral(model, x, t_x, T, scale=ours)
        assert ours == pytest.approx(ref, rel=1e-7, abs=1e-7), (x, t_x, T)
    # x == 0: the integral over p is 1, leaving (alpha/(alpha+T))^r
    assert float(model.log_likelihood(0, 0, 30.0)) == pytest.approx(
        model.r * math.log(model.alpha / (model.alpha + 30.0)), rel=1e-13
    )


def test_pareto_p_alive_equals_double_integral_ratio():
    """P(alive) = E[lambda^x e^-(lambda+mu)T] / L, the numerator integrated independently."""
    for m in PARETO_MODELS[:3]:
        for x, t_x, T in POINTS:
            # the numerator has a closed form: Gamma integrals of lambda^x e^-lambda T, e^-mu T
            log_num = (
                special.gammaln(m.r + x)
                - special.gammaln(m.r)
                + m.r * math.log(m.alpha / (m.alpha + T))
                - x * math.log(m.alpha + T)
                + m.s * math.log(m.beta / (m.beta + T))
            )
            ours = float(m.p_alive(x, t_x, T))
            log_l = _pareto_double_integral(m, x, t_x, T, scale=float(m.log_likelihood(x, t_x, T)))
            assert ours == pytest.approx(math.exp(log_num - log_l), rel=1e-7)
            assert 0.0 < ours <= 1.0


def test_pareto_matches_the_papers_hypergeometric_form_where_scipy_is_accurate():
    xs = np.array([0.0, 1.0, 2.0, 5.0, 12.0, 30.0])
    t_x = np.array([0.0, 3.0, 10.0, 25.5, 30.0, 38.0])
    T = np.array([12.0, 20.0, 33.0, 39.0, 40.0, 39.0])
    for m in [*PARETO_MODELS[:3], ParetoNBD(r=2.0, alpha=3.0, s=3.5, beta=8.0)]:
        np.testing.assert_allclose(
            m.log_likelihood(xs, t_x, T), _pareto_paper_ll(m, xs, t_x, T), rtol=1e-10
        )
        if m.s != 1.0:
            np.testing.assert_allclose(
                m.expected_purchases(39.0, xs, t_x, T),
                _pareto_paper_expectation(m, 39.0, xs, t_x, T),
                rtol=1e-10,
            )


def test_bg_expectation_matches_the_papers_hypergeometric_form():
    xs = np.array([0.0, 1.0, 2.0, 5.0, 12.0, 30.0])
    t_x = np.array([0.0, 3.0, 10.0, 25.5, 30.0, 38.0])
    T = np.array([12.0, 20.0, 33.0, 39.0, 40.0, 39.0])
    for m in [
        BGNBD(r=0.24, alpha=4.41, a=0.79, b=2.43),
        BGNBD(r=1.5, alpha=3.0, a=2.5, b=0.6),
        BGNBD(r=0.5, alpha=8.0, a=1.3, b=5.0),
    ]:
        for t in (1.0, 13.0, 52.0):
            np.testing.assert_allclose(
                m.expected_purchases(t, xs, t_x, T),
                _bg_paper_expectation(m, t, xs, t_x, T),
                rtol=1e-10,
            )
    # a == 1 (where the paper's form is 0/0) is the limit of its neighbours
    at_one = BGNBD(r=0.5, alpha=8.0, a=1.0, b=5.0).expected_purchases(52.0, xs, t_x, T)
    lo = BGNBD(r=0.5, alpha=8.0, a=1.0 - 1e-6, b=5.0).expected_purchases(52.0, xs, t_x, T)
    hi = BGNBD(r=0.5, alpha=8.0, a=1.0 + 1e-6, b=5.0).expected_purchases(52.0, xs, t_x, T)
    np.testing.assert_allclose(at_one, (lo + hi) / 2, rtol=1e-9)
    assert np.all(np.isfinite(at_one)) and np.all(at_one > 0)


# --------------------------------------------------------- 3. parameter recovery


def test_pareto_nbd_recovers_simulated_parameters():
    rng = np.random.default_rng(20240601)
    true = {"r": 0.6, "alpha": 8.0, "s": 0.8, "beta": 12.0}
    T = rng.uniform(26.0, 78.0, 30_000)
    x, t_x, T, _, _ = _sim_pareto_nbd(rng, T.size, *true.values(), T, 0.0)
    fitted = fit_pareto_nbd(x, t_x, T).to_dict()
    for name, want in true.items():
        assert fitted[name] == pytest.approx(want, rel=0.15), (name, fitted)


def test_bg_nbd_recovers_simulated_parameters():
    rng = np.random.default_rng(20240602)
    true = {"r": 0.3, "alpha": 6.0, "a": 0.7, "b": 2.5}
    T = rng.uniform(26.0, 78.0, 30_000)
    x, t_x, T, _, _ = _sim_bg_nbd(rng, T.size, *true.values(), T, 0.0)
    fitted = fit_bg_nbd(x, t_x, T).to_dict()
    for name, want in true.items():
        assert fitted[name] == pytest.approx(want, rel=0.15), (name, fitted)


# ------------------------------------------- 4. conditional expectations vs simulation


def _check_against_simulation(model, x, t_x, T, y, alive, t_hold):
    """E[Y(t)] and P(alive) against the simulated outcomes: by x-group within 4 standard
    errors (estimated from the residuals), and the grand total of purchases within 4 %."""
    expected = model.expected_purchases(t_hold, x, t_x, T)
    p_alive = model.p_alive(x, t_x, T)
    assert abs(y.sum() / expected.sum() - 1) < 0.04
    for group in (x == 0, (x >= 1) & (x <= 2), x >= 3):
        diff = y[group].sum() - expected[group].sum()
        se = math.sqrt(((y[group] - expected[group]) ** 2).sum())
        assert abs(diff) < 4 * se, (diff, se)
        diff_alive = alive[group].sum() - p_alive[group].sum()
        se_alive = math.sqrt((p_alive[group] * (1 - p_alive[group])).sum())
        if se_alive > 0:
            assert abs(diff_alive) < 4 * se_alive, (diff_alive, se_alive)
        else:  # BG/NBD: a customer without repeat purchases cannot have dropped out
            assert alive[group].all()


@pytest.mark.parametrize("s", [0.5, 1.0, 2.5])
def test_pareto_expectation_and_p_alive_match_simulation(s):
    rng = np.random.default_rng(7 + int(10 * s))
    model = ParetoNBD(r=0.8, alpha=6.0, s=s, beta=10.0 * s)
    T = rng.uniform(10.0, 60.0, 40_000)
    x, t_x, T, y, alive = _sim_pareto_nbd(rng, T.size, model.r, model.alpha, s, model.beta, T, 39.0)
    _check_against_simulation(model, x, t_x, T, y, alive, 39.0)


@pytest.mark.parametrize("a", [0.7, 1.0, 3.0])
def test_bg_expectation_and_p_alive_match_simulation(a):
    rng = np.random.default_rng(11 + int(10 * a))
    model = BGNBD(r=0.9, alpha=5.0, a=a, b=3.0)
    T = rng.uniform(10.0, 60.0, 40_000)
    x, t_x, T, y, alive = _sim_bg_nbd(rng, T.size, model.r, model.alpha, a, model.b, T, 39.0)
    _check_against_simulation(model, x, t_x, T, y, alive, 39.0)


def test_pareto_expectation_at_s_equal_one_is_the_log_limit():
    x, t_x, T, t = np.array([0.0, 3.0, 20.0]), np.array([0.0, 10.0, 29.0]), 30.0, 26.0
    m1 = ParetoNBD(r=0.7, alpha=5.0, s=1.0, beta=9.0)
    got = m1.expected_purchases(t, x, t_x, T)
    want = m1.p_alive(x, t_x, T) * (0.7 + x) / (5.0 + T) * (9.0 + T) * math.log1p(t / (9.0 + T))
    np.testing.assert_allclose(got, want, rtol=1e-13)
    for eps in (1e-12, 1e-7, 1e-3):
        for s in (1.0 - eps, 1.0 + eps):
            near = ParetoNBD(r=0.7, alpha=5.0, s=s, beta=9.0).expected_purchases(t, x, t_x, T)
            np.testing.assert_allclose(near, got, rtol=5 * eps + 1e-12)


# ------------------------------------- 5. validation, determinism, shapes, extremes


@pytest.mark.parametrize(
    ("x", "t_x", "T", "message"),
    [
        ([-1.0], [0.0], [5.0], "x .* must be >= 0"),
        ([1.5], [1.0], [5.0], "whole number"),
        ([1.0], [6.0], [5.0], "t_x .* must be <= T"),
        ([1.0], [-1.0], [5.0], "t_x .* must be >= 0"),
        ([1.0], [1.0], [0.0], "T .* must be > 0"),
        ([1.0], [1.0], [-2.0], "T .* must be > 0"),
        ([0.0], [1.0], [5.0], "t_x must be 0 where x == 0"),
        ([np.nan], [0.0], [5.0], "x must be finite"),
        ([1.0], [np.inf], [5.0], "t_x must be finite"),
        ([1.0, 2.0], [1.0, 2.0, 3.0], [5.0, 5.0], "incompatible shapes"),
        (["a"], [0.0], [5.0], "x must be numeric"),
    ],
)
def test_invalid_summaries_are_rejected(x, t_x, T, message):
    for call in (
        lambda: fit_bg_nbd(x, t_x, T),
        lambda: fit_pareto_nbd(x, t_x, T),
        lambda: BGNBD(1, 1, 1, 1).p_alive(x, t_x, T),
        lambda: ParetoNBD(1, 1, 1, 1).log_likelihood(x, t_x, T),
        lambda: ParetoNBD(1, 1, 1, 1).expected_purchases(1.0, x, t_x, T),
    ):
        with pytest.raises(ValueError, match=message):
            call()


def test_invalid_fit_arguments_and_parameters_are_rejected():
    x, t_x, T = np.array([0.0, 2.0]), np.array([0.0, 3.0]), np.array([5.0, 5.0])
    for fit in (fit_bg_nbd, fit_pareto_nbd):
        with pytest.raises(ValueError, match="empty"):
            fit([], [], [])
        with pytest.raises(ValueError, match="all x == 0"):
            fit([0.0, 0.0], [0.0, 0.0], [4.0, 9.0])
        with pytest.raises(ValueError, match="all x == 0"):  # the repeat buyer has weight 0
            fit(x, t_x, T, weights=[3.0, 0.0])
        with pytest.raises(ValueError, match="weights must be >= 0"):
            fit(x, t_x, T, weights=[1.0, -1.0])
        with pytest.raises(ValueError, match="all weights are zero"):
            fit(x, t_x, T, weights=[0.0, 0.0])
        with pytest.raises(ValueError, match="weights has 3 values"):
            fit(x, t_x, T, weights=[1.0, 1.0, 1.0])
        with pytest.raises(ValueError, match="penalizer"):
            fit(x, t_x, T, penalizer=-1.0)
    with pytest.raises(ValueError, match=r"t \(prediction horizon\) must be >= 0"):
        BGNBD(1, 1, 1, 1).expected_purchases(-1.0, x, t_x, T)
    with pytest.raises(ValueError, match="parameter alpha must be finite and > 0"):
        ParetoNBD(r=1.0, alpha=0.0, s=1.0, beta=1.0)
    with pytest.raises(ValueError, match="parameter b must be finite and > 0"):
        BGNBD(r=1.0, alpha=1.0, a=1.0, b=math.nan)
    with pytest.raises(ValueError, match="missing \\['beta'\\]"):
        ParetoNBD.from_dict({"r": 1.0, "alpha": 1.0, "s": 1.0})
    with pytest.raises(ValueError, match="unknown \\['s'\\]"):
        BGNBD.from_dict({"r": 1.0, "alpha": 1.0, "a": 1.0, "b": 1.0, "s": 1.0})


@pytest.fixture(scope="module")
def day_rounded():
    """8,000 simulated customers with times rounded to days (in weeks): many duplicate rows."""
    rng = np.random.default_rng(99)
    T = rng.integers(7, 52 * 7, 8_000) / 7.0
    x, t_x, T, _, _ = _sim_bg_nbd(rng, T.size, 0.5, 5.0, 0.8, 2.0, T, 0.0)
    return x, np.round(t_x * 7.0) / 7.0, T


def test_fits_are_deterministic_and_weights_equal_repeated_rows(day_rounded):
    x, t_x, T = day_rounded
    for fit in (fit_bg_nbd, fit_pareto_nbd):
        first, second = fit(x, t_x, T), fit(x, t_x, T)
        assert first == second  # bitwise-equal floats
        # the same customers given as distinct rows with counts
        rows, counts = np.unique(np.stack([x, t_x, T], axis=1), axis=0, return_counts=True)
        assert len(rows) < len(x)
        weighted = fit(rows[:, 0], rows[:, 1], rows[:, 2], weights=counts)
        assert weighted == first
        # shuffled input, same model
        order = np.random.default_rng(0).permutation(len(x))
        assert fit(x[order], t_x[order], T[order]) == first
        # a penalty shrinks the log-parameters
        shrunk = fit(x, t_x, T, penalizer=0.1)
        assert sum(math.log(v) ** 2 for v in shrunk.to_dict().values()) < sum(
            math.log(v) ** 2 for v in first.to_dict().values()
        )
        model = first
        for method in ("log_likelihood", "p_alive"):
            a = getattr(model, method)(x, t_x, T)
            b = getattr(model, method)(x, t_x, T)
            assert a.tobytes() == b.tobytes()
        a = model.expected_purchases(13.0, x, t_x, T)
        assert a.tobytes() == model.expected_purchases(13.0, x, t_x, T).tobytes()
        assert type(model).from_dict(model.to_dict()) == model


@pytest.mark.parametrize(
    "model", [ParetoNBD(0.55, 10.58, 0.61, 11.67), BGNBD(0.24, 4.41, 0.79, 2.43)]
)
def test_shapes_and_broadcasting(model):
    x = np.array([[0.0, 1.0, 5.0], [2.0, 0.0, 7.0]])
    t_x = np.array([[0.0, 3.0, 20.0], [8.0, 0.0, 29.0]])
    T = 30.0
    for method in ("log_likelihood", "p_alive"):
        out = getattr(model, method)(x, t_x, T)
        assert out.shape == (2, 3) and out.dtype == np.float64
        flat = getattr(model, method)(x.ravel(), t_x.ravel(), np.full(6, T))
        np.testing.assert_array_equal(out.ravel(), flat)
        assert getattr(model, method)(1, 3.0, 30).shape == ()
    assert model.expected_purchases(13, x, t_x, T).shape == (2, 3)
    horizons = np.array([0.0, 4.0, 13.0, 52.0])[:, None, None]
    out = model.expected_purchases(horizons, x, t_x, T)
    assert out.shape == (4, 2, 3)
    assert np.all(out[0] == 0) and np.all(np.diff(out, axis=0) > 0)  # more time, more purchases
    np.testing.assert_array_equal(out[2], model.expected_purchases(13.0, x, t_x, T))
    assert model.expected_purchases(13.0, 1, 3.0, 30).shape == ()
    assert model.log_likelihood([], [], []).shape == (0,)


EXTREME_PARETO = [
    ParetoNBD(0.55, 10.58, 0.61, 11.67),
    ParetoNBD(0.5, 0.01, 0.5, 1e4),  # alpha << beta: z within 1e-6 of 1 at t_x ~ 0
    ParetoNBD(2.0, 1e4, 0.3, 0.01),  # alpha >> beta
    ParetoNBD(1.0, 5.0, 1.0, 5.0),
    ParetoNBD(0.05, 1.0, 0.05, 1.0e3),
]


def _pareto_ll_by_1d_quadrature(m: ParetoNBD, x, t_x, T):
    """The two parts of the likelihood as 1-D integrals, by adaptive quadrature (scipy quad).

    Each part is int_tau^inf (alpha+u)^-mm (beta+u)^-nn du (the gamma mixtures integrated in
    closed form); it is integrated over w = log(u - tau), split at the scales of the problem.
    """
    r, al, s, be = m.r, m.alpha, m.s, m.beta

    def log_part(tau, mm, nn):
        a, b = al + tau, be + tau
        f0 = -mm * math.log(a) - nn * math.log(b)  # the integrand at u = tau

        def g(w):
            v = math.exp(w)
            return math.exp(w - mm * math.log1p(v / a) - nn * math.log1p(v / b))

        scales = sorted(math.log(c * k) for c in (a, b) for k in (1e-4, 1e-2, 1.0, 1e2))
        lo = scales[0] - 40.0
        hi = scales[-1] + 60.0 / (mm + nn - 1.0)
        edges = [lo, *scales, hi]
        total = sum(
            integrate.quad(g, e0, e1, epsabs=0, epsrel=1e-12, limit=500)[0]
            for e0, e1 in itertools.pairwise(edges)
        )
        return f0 + math.log(total)

    head = r * math.log(al) + s * math.log(be) - math.lgamma(r)
    k1 = math.lgamma(r + x + 1) + head + log_part(T, r + x + 1, s)
    k2 = math.lgamma(r + x) + head + math.log(s) + log_part(t_x, r + x, s + 1)
    return float(np.logaddexp(k1, k2))


@pytest.mark.parametrize("model", EXTREME_PARETO, ids=lambda m: f"a{m.alpha}-b{m.beta}")
def test_pareto_extreme_region_is_finite_and_accurate(model):
    x = np.array([300.0, 300.0, 300.0, 300.0, 0.0, 1.0, 50.0])
    t_x = np.array([1e-6, 0.5, 250.0, 500.0, 0.0, 1e-9, 499.9])
    T = np.array([500.0, 500.0, 500.0, 500.0, 500.0, 0.001, 500.0])
    ll = model.log_likelihood(x, t_x, T)
    pa = model.p_alive(x, t_x, T)
    ey = model.expected_purchases(52.0, x, t_x, T)
    assert np.all(np.isfinite(ll)) and np.all(np.isfinite(ey)) and np.all(ey >= 0)
    assert np.all((pa >= 0) & (pa <= 1))
    assert pa[3] > pa[2] > pa[1]  # the later the last purchase, the likelier alive
    for i in range(len(x)):
        ref = _pareto_ll_by_1d_quadrature(model, x[i], t_x[i], T[i])
        assert ll[i] == pytest.approx(ref, rel=1e-9, abs=1e-8), i


def test_pareto_both_numerical_routes_agree_across_the_switch():
    """2F1 by continued fraction (z <= 0.999) and by quadrature (z > 0.999) meet smoothly."""
    x, t_x, T = np.array([0.0, 3.0, 40.0]), np.array([0.0, 1e-3, 2e-3]), np.array([2e-3] * 3)
    for r, s in [(0.5, 0.3), (2.0, 1.0), (0.9, 4.0)]:
        for ratio in (998.0, 999.0, 1001.0, 1002.0):  # z = 1 - 1/ratio at tau = 0
            for big_is_alpha in (True, False):
                al, be = (ratio, 1.0) if big_is_alpha else (1.0, ratio)
                m = ParetoNBD(r=r, alpha=al, s=s, beta=be)
                ll = m.log_likelihood(x, t_x, T)
                for i in range(len(x)):
                    ref = _pareto_ll_by_1d_quadrature(m, x[i], t_x[i], T[i])
                    assert ll[i] == pytest.approx(ref, rel=1e-10, abs=1e-9)


def test_huge_shape_parameters_stay_accurate():
    """s, beta -> inf with s/beta fixed is a fixed dropout rate: no cancellation blow-up."""
    x, t_x, T = np.array([0.0, 2.0, 9.0]), np.array([0.0, 10.0, 29.0]), np.array([30.0] * 3)
    lls = [ParetoNBD(0.6, 10.0, s, s / 0.03).log_likelihood(x, t_x, T) for s in (1e6, 1e9, 1e12)]
    np.testing.assert_allclose(lls[1], lls[2], rtol=1e-6)
    np.testing.assert_allclose(lls[0], lls[2], rtol=1e-4)
    bgs = [BGNBD(0.6, 10.0, a, a * 9.0).log_likelihood(x, t_x, T) for a in (1e6, 1e9, 1e12)]
    np.testing.assert_allclose(bgs[1], bgs[2], rtol=1e-6)
    assert all(np.all(np.isfinite(v)) for v in lls + bgs)


def test_bg_extreme_region_is_finite():
    m = BGNBD(0.24, 4.41, 0.79, 2.43)
    x = np.array([300.0, 300.0, 300.0, 0.0])
    t_x = np.array([1e-6, 250.0, 500.0, 0.0])
    T = np.full(4, 500.0)
    for t in (1.0, 52.0, 520.0):
        ey = m.expected_purchases(t, x, t_x, T)
        assert np.all(np.isfinite(ey)) and np.all(ey >= 0)
    assert np.all(np.isfinite(m.log_likelihood(x, t_x, T)))
    pa = m.p_alive(x, t_x, T)
    assert pa[0] < 1e-100 and pa[2] > 0.5 and pa[3] == 1.0
    # a new customer (tiny T) with many purchases, long horizon: the series is long but converges
    ey = BGNBD(0.24, 4.41, 0.79, 2.43).expected_purchases(520.0, 300.0, 0.5, 0.5)
    assert np.isfinite(ey) and ey > 0


# --------------------------------------------------------------------------- fan features


def test_fan_summary_reads_the_fan_features_in_weeks():
    from features.btyd import fan_summary

    orders = np.array([3.0, 1.0, 0.0, 2.0])
    first = np.array([20.5, 6.2, np.nan, 0.3])  # days since the first order
    last = np.array([2.5, 6.2, np.nan, 0.1])
    x, t_x, T, buyer = fan_summary(orders, first, last)
    np.testing.assert_array_equal(buyer, [True, True, False, True])
    np.testing.assert_array_equal(x, [2.0, 0.0, 0.0, 1.0])
    # whole days back from the cutoff (ceil), over 7
    np.testing.assert_allclose(T[buyer], np.array([21.0, 7.0, 1.0]) / 7)
    np.testing.assert_allclose(t_x[buyer], np.array([21.0 - 3.0, 0.0, 0.0]) / 7)


def test_fan_btyd_columns_round_trip_and_buyers_only():
    from features.btyd import BTYD_COLUMNS, FanBtyd, fit_fan_btyd

    rng = np.random.default_rng(5)
    n = 3000
    orders = rng.poisson(1.5, n).astype(float)
    first = rng.uniform(1, 200, n)
    last = first * rng.uniform(0, 1, n)
    feats = {
        "fan__orders_all": orders,
        "fan__days_since_first_order": np.where(orders > 0, first, np.nan),
        "fan__days_since_last_order": np.where(orders > 0, last, np.nan),
    }
    fit = fit_fan_btyd(feats, horizon_days=30, fitted_at="2024-06-01")
    assert fit is not None and fit.n_buyers == int((orders > 0).sum())
    cols = fit.columns(feats)
    assert set(cols) == set(BTYD_COLUMNS)
    for name, values in cols.items():
        assert np.isnan(values[orders == 0]).all(), name
        assert np.isfinite(values[orders > 0]).all(), name
    assert (cols["fan__pnbd_p_alive"][orders > 0] <= 1).all()
    again = FanBtyd.from_dict(fit.to_dict())
    assert again == fit
    for name in BTYD_COLUMNS:
        np.testing.assert_array_equal(again.columns(feats)[name], cols[name])
    # a longer window expects more orders
    longer = FanBtyd(fit.pareto, fit.bg, 90).columns(feats)
    buyers = orders > 0
    assert (
        longer["fan__pnbd_expected_orders"][buyers] > cols["fan__pnbd_expected_orders"][buyers]
    ).all()


def test_fit_fan_btyd_needs_buyers_and_a_repeat():
    from features.btyd import MIN_BUYERS, fit_fan_btyd

    few = {
        "fan__orders_all": np.full(MIN_BUYERS - 1, 2.0),
        "fan__days_since_first_order": np.full(MIN_BUYERS - 1, 30.0),
        "fan__days_since_last_order": np.full(MIN_BUYERS - 1, 3.0),
    }
    assert fit_fan_btyd(few, 30) is None
    no_repeat = {k: np.resize(v, 500) for k, v in few.items()} | {"fan__orders_all": np.ones(500)}
    assert fit_fan_btyd(no_repeat, 30) is None
