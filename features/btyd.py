""" "Buy till you die" customer-base models: Pareto/NBD and BG/NBD (pure numpy/scipy).

Inputs
------
Every function takes the per-customer summary of a purchase history as three float arrays
of the same length (or broadcastable shapes):

* ``x`` -- the number of **repeat** purchases: distinct purchase periods minus one
  (an integer >= 0; the first purchase is not counted).
* ``t_x`` -- the time of the last purchase, measured from the first purchase
  (``0 <= t_x <= T``; ``t_x == 0`` when ``x == 0``).
* ``T`` -- the time from the first purchase to the end of the calibration period (``T > 0``;
  customers whose first purchase is at the cutoff carry no information and must be left out).

Times are in **the caller's time unit** (the product uses weeks). Rate-type parameters
(``alpha``, ``beta``) are in that unit too: ``alpha`` and ``beta`` are scale parameters of gamma
distributions of rates *per time unit*, so multiplying every time by ``k`` multiplies ``alpha``
and ``beta`` by ``k`` and leaves ``r``, ``s``, ``a``, ``b`` unchanged. Expected purchase counts
are counts (dimensionless); horizons ``t`` are in the caller's unit.

Models
------
* **Pareto/NBD** (Schmittlein, Morrison & Colombo 1987; the forms of Fader & Hardie,
  "A Note on Deriving the Pareto/NBD Model and Related Expressions", 2005): while alive a
  customer buys as a Poisson process with rate ``lambda ~ Gamma(r, alpha)`` (shape ``r``,
  rate ``alpha``); the lifetime is exponential with rate ``mu ~ Gamma(s, beta)``.
* **BG/NBD** (Fader, Hardie & Lee 2005, "Counting your customers the easy way"): purchases
  as above with ``lambda ~ Gamma(r, alpha)``; after every repeat purchase the customer drops
  out with probability ``p ~ Beta(a, b)``.

Each model offers the per-customer log-likelihood (a density in the purchase times, as in the
papers), the probability of being alive at ``T`` and the conditional expectation of the number
of purchases in ``(T, T + t]``. :func:`fit_pareto_nbd` / :func:`fit_bg_nbd` estimate the
parameters by maximum likelihood.

Numerics
--------
Pareto/NBD. The papers write the likelihood with a difference of two Gauss hypergeometric
functions (the ``A0`` term). This module uses the equivalent split of the individual-level
likelihood into two *positive* parts,

    L(lambda, mu) = lambda^x mu/(lambda+mu) e^{-(lambda+mu) t_x}
                  + lambda^{x+1}/(lambda+mu) e^{-(lambda+mu) T},

so after integrating over the gamma mixing distributions the likelihood is a sum of two
positive terms and no cancellation can occur (the papers' ``A0`` difference is
``(r+s+x)/s`` times the first part minus a share of the second; both forms agree). Each part
is ``H(tau) = int_tau^inf (alpha+u)^-m (beta+u)^-n du``, which equals
``P^-m_P Q^(1-m_Q) / (m+n-1) * 2F1(1, m_P; m+n; z)`` with ``P``/``Q`` the larger/smaller of
``alpha+tau``/``beta+tau``, ``m_P``/``m_Q`` their exponents and ``z = |alpha-beta|/P`` in
``[0, 1)`` -- the papers' two cases ``alpha >= beta`` and ``alpha < beta``, after Euler's
transformation. ``scipy.special.hyp2f1`` returns NaN/inf for much of this family (large
``x`` with ``z`` near 1, ``c - a - b`` an integer), so it is not used: ``2F1(1, .; .; z)`` is
evaluated with the incomplete-beta continued fraction (DLMF 8.17.22, modified Lentz) for
``z <= 0.999`` and, for ``z > 0.999``, ``H`` is computed by the trapezoidal rule in
``y = log(v / Q)``; the integrand is analytic in a strip, so that rule converges
geometrically, and the far tail (a pure exponential) is summed in closed form. Everything is
kept in log space.

BG/NBD. The likelihood is closed form (beta and gamma functions, combined with
``logaddexp``). The conditional expectation in the paper is
``(a+b+x-1)/(a-1) * [1 - ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)]``, which
needs ``a != 1`` and cancels badly near ``a = 1``. It is evaluated through the identical
series ``sum_k NB(k; r+x, z) R_k`` with ``z = t/(alpha+T+t)``, ``NB`` the negative-binomial
probabilities and ``R_k = sum_{i<k} (b+x)_i / (a+b+x)_i``: all terms are positive and the
result is valid for every ``a > 0`` (for ``a <= 1`` the expected number of future purchases
grows without bound as ``t`` grows, as it should).

Pareto/NBD conditional expectation. The paper's closed form has the factor
``(beta+T)/(s-1) [1 - ((beta+T)/(beta+T+t))^(s-1)]``; it is evaluated as
``(beta+T) L * expm1(-(s-1) L)/(-(s-1) L)`` with ``L = log1p(t/(beta+T))``, which is valid for
every ``s > 0`` and tends to ``(beta+T) * L`` (a logarithm) at ``s == 1``.

Fitting. Maximum likelihood with ``scipy.optimize.minimize`` (L-BFGS-B) on the logs of the
parameters, bounded to ``[1e-6, 1e6]``, from a deterministic moment-based start. Identical
``(x, t_x, T)`` rows are merged into weights first, so a million customers with day-rounded
times cost little more than their distinct rows. A fit needs at least one customer with a
repeat purchase: with ``x == 0`` everywhere the likelihood keeps increasing as the purchase
rate goes to zero, so the parameters are not identifiable and a ``ValueError`` is raised (the
model *methods* accept ``x == 0`` everywhere). An optional L2 penalty on the *log*
parameters (``penalizer * sum(log(theta)^2)``, added to the mean negative log-likelihood)
shrinks parameters towards 1; it is not the raw-parameter penalty of the ``lifetimes``
package. Results are deterministic: the same input gives bitwise the same output.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import special

__all__ = [
    "BGNBD",
    "BTYD_COLUMNS",
    "BTYD_INPUTS",
    "FanBtyd",
    "ParetoNBD",
    "fan_summary",
    "fit_bg_nbd",
    "fit_fan_btyd",
    "fit_pareto_nbd",
]

FloatArray = NDArray[np.float64]

#: Bounds of every fitted parameter (in the caller's units for ``alpha``/``beta``).
PARAM_MIN = 1e-6
PARAM_MAX = 1e6

_Z_SWITCH = 0.999  # continued fraction up to here, quadrature above
_CF_TOL = 1e-15
_CF_MAXITER = 2000  # z <= 0.999 needs < 300 iterations
_QUAD_STEP = 0.25  # trapezoid step in log(v / Q)
_QUAD_CHUNK = 2048
_NB_TOL = 1e-16
_NB_MAXITER = 1_000_000


# --------------------------------------------------------------------------- inputs


def _first_bad(mask: NDArray[np.bool_]) -> str:
    idx = np.flatnonzero(mask.ravel())
    return f"{idx.size} value(s), first at flat index {int(idx[0])}"


def _as_float_array(name: str, value: ArrayLike) -> FloatArray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from exc
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} must be finite; found NaN/inf in {_first_bad(bad)}")
    return arr


def _summary(x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> tuple[FloatArray, ...]:
    """Validate and broadcast the per-customer summary ``(x, t_x, T)``."""
    xa = _as_float_array("x", x)
    ta = _as_float_array("t_x", t_x)
    Ta = _as_float_array("T", T)
    try:
        xa, ta, Ta = np.broadcast_arrays(xa, ta, Ta)
    except ValueError as exc:
        raise ValueError(f"x, t_x and T have incompatible shapes: {exc}") from exc
    checks = [
        (xa < 0, "x (repeat purchases) must be >= 0"),
        (xa != np.floor(xa), "x (repeat purchases) must be a whole number"),
        (Ta <= 0, "T (time from first purchase to cutoff) must be > 0"),
        (ta < 0, "t_x (time of last purchase) must be >= 0"),
        (ta > Ta, "t_x (time of last purchase) must be <= T"),
        ((xa == 0) & (ta != 0), "t_x must be 0 where x == 0 (no repeat purchase)"),
    ]
    for bad, message in checks:
        if bad.any():
            raise ValueError(f"{message}; violated by {_first_bad(bad)}")
    return np.array(xa), np.array(ta), np.array(Ta)


def _horizon(t: ArrayLike, shape: tuple[int, ...]) -> tuple[FloatArray, tuple[int, ...]]:
    ta = _as_float_array("t", t)
    if (ta < 0).any():
        raise ValueError(f"t (prediction horizon) must be >= 0; violated by {_first_bad(ta < 0)}")
    try:
        out_shape = np.broadcast_shapes(ta.shape, shape)
    except ValueError as exc:
        raise ValueError(f"t does not broadcast against x, t_x, T: {exc}") from exc
    return ta, out_shape


def _group_rows(*cols: FloatArray) -> tuple[list[FloatArray], NDArray[np.intp]]:
    """Distinct rows of equal-length 1-D columns (sorted) and the inverse index."""
    n = cols[0].size
    if n == 0:
        return [c.copy() for c in cols], np.zeros(0, dtype=np.intp)
    order = np.lexsort(cols[::-1])
    srt = [c[order] for c in cols]
    new = np.zeros(n, dtype=bool)
    new[0] = True
    for c in srt:
        new[1:] |= c[1:] != c[:-1]
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = np.cumsum(new) - 1
    return [c[new] for c in srt], inverse


def _check_param(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameter {name} must be a number, got {value!r}") from exc
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"parameter {name} must be finite and > 0, got {v!r}")
    return v


class _Params:
    """Validation and (de)serialisation shared by the two frozen model dataclasses."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            object.__setattr__(self, f.name, _check_param(f.name, getattr(self, f.name)))

    def to_dict(self) -> dict[str, float]:
        """The parameters as a plain ``{name: float}`` dict (JSON-friendly)."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Rebuild a model from :meth:`to_dict` output; unknown or missing keys are an error."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        missing = [n for n in names if n not in d]
        extra = sorted(set(d) - set(names))
        if missing or extra:
            raise ValueError(
                f"{cls.__name__}.from_dict needs exactly {names}; "
                f"missing {missing}, unknown {extra}"
            )
        return cls(**{n: d[n] for n in names})


# --------------------------------------------------------------- Pareto/NBD numerics


def _hyp2f1_1_cf(mP: FloatArray, mQ: FloatArray, z: FloatArray) -> FloatArray:
    """``2F1(1, mP; mP + mQ; z)`` for ``0 <= z < 1`` by the incomplete-beta continued fraction.

    ``B_z(a, b) = z^a (1-z)^b / a * 2F1(1, a+b; a+1; z)`` and DLMF 8.17.22 gives the
    continued fraction of that ratio; here ``a = mP + mQ - 1`` and ``b = 1 - mQ`` (any sign).
    Evaluated by the modified Lentz method, each element until its own convergence.
    """
    a = mP + mQ - 1.0
    b = 1.0 - mQ
    tiny = 1e-300
    out = np.empty(z.shape, dtype=np.float64)
    idx = np.arange(z.size)
    a_, b_, x_ = a.copy(), b.copy(), z.copy()
    c = np.ones_like(x_)
    d = 1.0 - (a_ + b_) * x_ / (a_ + 1.0)
    d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
    h = d.copy()
    for m in range(1, _CF_MAXITER + 1):
        m2 = 2.0 * m
        aa = m * (b_ - m) * x_ / ((a_ + m2 - 1.0) * (a_ + m2))
        d = 1.0 + aa * d
        d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        h *= d * c
        aa = -(a_ + m) * (a_ + b_ + m) * x_ / ((a_ + m2) * (a_ + m2 + 1.0))
        d = 1.0 + aa * d
        d = 1.0 / np.where(np.abs(d) < tiny, tiny, d)
        c = 1.0 + aa / c
        c = np.where(np.abs(c) < tiny, tiny, c)
        delta = d * c
        h *= delta
        done = np.abs(delta - 1.0) <= _CF_TOL
        if done.all() or m == _CF_MAXITER:
            out[idx] = h
            break
        if done.any():
            out[idx[done]] = h[done]
            keep = ~done
            idx = idx[keep]
            a_, b_, x_, c, d, h = (v[keep] for v in (a_, b_, x_, c, d, h))
    return out


def _log_tail_quad(mP: FloatArray, mQ: FloatArray, log_eps: FloatArray) -> FloatArray:
    """``log int_R e^y (1+e^y)^-mQ (1 + eps e^y)^-mP dy`` for small ``eps = exp(log_eps)``.

    Trapezoidal rule with step ``_QUAD_STEP``; the integrand is analytic in the strip
    ``|Im y| < pi`` so the rule converges geometrically. Nodes start where the integrand is
    ``e^-50`` below its peak; beyond ``log(1/eps) + 40`` the integrand is ``exp(-A y)`` to
    double precision (``A = mP + mQ - 1``) and the rest of the infinite grid is summed as a
    geometric series.
    """
    out = np.empty(mP.shape, dtype=np.float64)
    h = _QUAD_STEP
    for lo in range(0, mP.size, _QUAD_CHUNK):
        sl = slice(lo, lo + _QUAD_CHUNK)
        p, q, le = mP[sl, None], mQ[sl, None], log_eps[sl, None]
        A = p + q - 1.0
        y_lo = -50.0 - np.log(np.maximum(q, 1.0))
        y_hi = -le + 40.0
        k = int(np.ceil(np.max((y_hi - y_lo) / h))) + 1
        y = y_lo + h * np.arange(k)[None, :]
        logf = y - q * np.logaddexp(0.0, y) - p * np.logaddexp(0.0, y + le)
        # the tail past the last node: f_last * sum_{j>=1} e^{-A h j}
        tail = logf[:, -1:] - A * h - np.log(-np.expm1(-A * h))
        logf = np.concatenate([logf, tail], axis=1)
        out[sl] = special.logsumexp(logf, axis=1) + math.log(h)
    return out


def _log_poch(z: float | FloatArray, k: FloatArray) -> FloatArray:
    """``log(Gamma(z + k) / Gamma(z))`` (``z > 0``, ``k >= 0``), no cancellation at large ``z``."""
    z_arr = np.asarray(z, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    big = z_arr >= 1e3
    zb = np.where(big, z_arr, 1e3)
    zk = zb + k
    # Stirling differences; the first omitted term is O(z^-5) < 1e-17
    stirling = (
        (zb - 0.5) * np.log1p(k / zb)
        + k * np.log(zk)
        - k
        + (1.0 / zk - 1.0 / zb) / 12.0
        - (1.0 / zk**3 - 1.0 / zb**3) / 360.0
    )
    zs = np.where(big, 1.0, z_arr)
    return np.where(big, stirling, special.gammaln(zs + k) - special.gammaln(zs))


def _log_scaled_tail(
    tau: FloatArray,
    r: float,
    dm: FloatArray,
    s: float,
    dn: float,
    alpha: float,
    beta: float,
) -> FloatArray:
    """``log(alpha^r beta^s int_tau^inf (alpha+u)^-(r+dm) (beta+u)^-(s+dn) du)``.

    ``dm, dn >= 0`` and ``r + dm + s + dn > 1``. The powers of ``alpha``/``beta`` are folded in
    as ``(alpha/(alpha+tau))^r`` so nothing cancels when ``r`` or ``s`` is huge.
    """
    m = np.broadcast_to(r + dm, tau.shape).astype(np.float64)
    n = s + dn
    la, lb = np.log(alpha + tau), np.log(beta + tau)
    out = -r * np.log1p(tau / alpha) - dm * la - s * np.log1p(tau / beta) - dn * lb
    if alpha >= beta:
        logP, logQ, mP, mQ = la, lb, m, np.full_like(tau, n)
        P = alpha + tau
    else:
        logP, logQ, mP, mQ = lb, la, np.full_like(tau, n), m
        P = beta + tau
    z = abs(alpha - beta) / P
    out = out + logQ
    cf = z <= _Z_SWITCH
    if cf.any():
        A = mP[cf] + mQ[cf] - 1.0
        out[cf] += np.log(_hyp2f1_1_cf(mP[cf], mQ[cf], z[cf])) - np.log(A)
    if not cf.all():
        nq = ~cf
        out[nq] += _log_tail_quad(mP[nq], mQ[nq], logQ[nq] - logP[nq])
    return out


def _pnbd_pair_terms(
    r: float,
    alpha: float,
    s: float,
    beta: float,
    x1: FloatArray,
    T1: FloatArray,
    x2: FloatArray,
    t2: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """The two positive parts of the Pareto/NBD likelihood, in logs.

    ``log E[lambda^(x+1)/(lambda+mu) e^-(lambda+mu)T]`` on the ``(x1, T1)`` pairs and
    ``log E[lambda^x mu/(lambda+mu) e^-(lambda+mu)t_x]`` on the ``(x2, t2)`` pairs.
    """
    k1 = _log_poch(r, x1 + 1.0) + _log_scaled_tail(T1, r, x1 + 1.0, s, 0.0, alpha, beta)
    k2 = _log_poch(r, x2) + math.log(s) + _log_scaled_tail(t2, r, x2, s, 1.0, alpha, beta)
    return k1, k2


def _pnbd_log_parts(
    r: float, alpha: float, s: float, beta: float, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """``(log L, log num)`` per row of 1-D arrays; ``exp(num - L)`` is P(alive at T)."""
    (x1, T1), i1 = _group_rows(x, T)
    (x2, t2), i2 = _group_rows(x, t_x)
    k1, k2 = _pnbd_pair_terms(r, alpha, s, beta, x1, T1, x2, t2)
    # E[lambda^x e^-(lambda+mu)T]: alive at T with x repeat purchases
    log_num1 = (
        _log_poch(r, x1)
        - r * np.log1p(T1 / alpha)
        - x1 * np.log(alpha + T1)
        - s * np.log1p(T1 / beta)
    )
    return np.logaddexp(k1[i1], k2[i2]), log_num1[i1]


def _expm1_ratio(u: FloatArray) -> FloatArray:
    """``expm1(u) / u`` with the value 1 at ``u == 0``."""
    small = np.abs(u) < 1e-8
    safe = np.where(small, 1.0, u)
    return np.where(small, 1.0 + 0.5 * u, np.expm1(safe) / safe)


# ----------------------------------------------------------------------- models


@dataclass(frozen=True)
class ParetoNBD(_Params):
    """Pareto/NBD parameters.

    ``lambda ~ Gamma(shape=r, rate=alpha)`` is the purchase rate per time unit while alive and
    ``mu ~ Gamma(shape=s, rate=beta)`` the dropout rate per time unit; ``alpha`` and ``beta``
    are in the caller's time unit, ``r`` and ``s`` are dimensionless.
    """

    r: float
    alpha: float
    s: float
    beta: float

    def log_likelihood(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """Per-customer log-likelihood of ``(x, t_x, T)`` (broadcast shape).

        A log density in the repeat-purchase times (so it depends on the time unit), as in
        Fader & Hardie's note; sums of it across customers are what the fit maximises.
        """
        xa, ta, Ta = _summary(x, t_x, T)
        if xa.size == 0:
            return np.zeros(xa.shape)
        ll, _ = _pnbd_log_parts(
            self.r, self.alpha, self.s, self.beta, xa.ravel(), ta.ravel(), Ta.ravel()
        )
        return ll.reshape(xa.shape)

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """Probability that the customer is still alive at ``T`` (in ``[0, 1]``)."""
        xa, ta, Ta = _summary(x, t_x, T)
        if xa.size == 0:
            return np.zeros(xa.shape)
        ll, num = _pnbd_log_parts(
            self.r, self.alpha, self.s, self.beta, xa.ravel(), ta.ravel(), Ta.ravel()
        )
        return np.minimum(np.exp(num - ll), 1.0).reshape(xa.shape)

    def expected_purchases(
        self, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """``E[Y(t) | x, t_x, T]``: expected purchases in ``(T, T + t]``, ``t`` in time units.

        ``t`` may be a scalar or an array broadcasting against the summary. Valid for every
        ``s > 0`` (the paper's ``1/(s-1)`` closed form is evaluated through its limit-safe
        equivalent; at ``s == 1`` the factor is ``(beta+T) * log(1 + t/(beta+T))``).
        """
        xa, ta, Ta = _summary(x, t_x, T)
        tt, shape = _horizon(t, xa.shape)
        alive = self.p_alive(xa, ta, Ta)
        tt, xa, Ta, alive = np.broadcast_arrays(tt, xa, Ta, alive)
        bT = self.beta + Ta
        L = np.log1p(tt / bT)
        per_alive = (self.r + xa) / (self.alpha + Ta) * bT * L * _expm1_ratio(-(self.s - 1.0) * L)
        return np.array(alive * per_alive).reshape(shape)


@dataclass(frozen=True)
class BGNBD(_Params):
    """BG/NBD parameters.

    ``lambda ~ Gamma(shape=r, rate=alpha)`` is the purchase rate per time unit while alive
    (``alpha`` in the caller's time unit); after each repeat purchase the customer drops out
    with probability ``p ~ Beta(a, b)`` (``r``, ``a``, ``b`` dimensionless).
    """

    r: float
    alpha: float
    a: float
    b: float

    def log_likelihood(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """Per-customer log-likelihood of ``(x, t_x, T)`` (a log density in purchase times)."""
        xa, ta, Ta = _summary(x, t_x, T)
        ll = _bgnbd_ll(self.r, self.alpha, self.a, self.b, xa.ravel(), ta.ravel(), Ta.ravel())
        return ll.reshape(xa.shape)

    def p_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """Probability that the customer is still alive at ``T`` (1 when ``x == 0``)."""
        xa, ta, Ta = _summary(x, t_x, T)
        return np.exp(_bgnbd_log_p_alive(self.r, self.alpha, self.a, self.b, xa, ta, Ta))

    def expected_purchases(
        self, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
    ) -> FloatArray:
        """``E[Y(t) | x, t_x, T]``: expected purchases in ``(T, T + t]``, ``t`` in time units.

        The paper's expression (its eq. 10), evaluated by a positive series valid for all
        ``a > 0`` (see the module docstring).
        """
        xa, ta, Ta = _summary(x, t_x, T)
        tt, shape = _horizon(t, xa.shape)
        log_alive = _bgnbd_log_p_alive(self.r, self.alpha, self.a, self.b, xa, ta, Ta)
        tt, xa, Ta, log_alive = (np.ravel(v) for v in np.broadcast_arrays(tt, xa, Ta, log_alive))
        (ux, uT, ut), inv = _group_rows(xa, Ta, tt)
        per_alive = _bgnbd_alive_expectation(self.r, self.alpha, self.a, self.b, ux, uT, ut)
        return (np.exp(log_alive) * per_alive[inv]).reshape(shape)


def _bgnbd_ll(
    r: float,
    alpha: float,
    a: float,
    b: float,
    x: FloatArray,
    t_x: FloatArray,
    T: FloatArray,
    x_groups: tuple[FloatArray, NDArray[np.intp]] | None = None,
) -> FloatArray:
    """Per-row BG/NBD log-likelihood; ``x_groups`` = (distinct x, inverse) if precomputed."""
    if x_groups is None:
        (ux,), ix = _group_rows(x)
    else:
        ux, ix = x_groups
    # B(a, b+x)/B(a, b) = (b)_x/(a+b)_x and B(a+1, b+x-1)/B(a, b) = a (b)_(x-1)/(a+b)_x
    log_ab_x = _log_poch(a + b, ux)
    per_x_head = _log_poch(r, ux)
    per_x_t1 = _log_poch(b, ux) - log_ab_x
    per_x_t2 = math.log(a) + _log_poch(b, np.maximum(ux, 1.0) - 1.0) - log_ab_x
    head = per_x_head[ix] - r * np.log1p(T / alpha) - x * np.log(alpha + T)
    t2 = per_x_t2[ix] + (r + x) * np.log1p((T - t_x) / (alpha + t_x))
    return head + np.logaddexp(per_x_t1[ix], np.where(x > 0, t2, -np.inf))


def _bgnbd_log_p_alive(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> FloatArray:
    xp = np.maximum(x, 1.0)
    log_odds = math.log(a) - np.log(b + xp - 1.0) + (r + x) * np.log1p((T - t_x) / (alpha + t_x))
    return np.where(x > 0, -np.logaddexp(0.0, log_odds), 0.0)


def _bgnbd_alive_expectation(
    r: float, alpha: float, a: float, b: float, x: FloatArray, T: FloatArray, t: FloatArray
) -> FloatArray:
    """``E[Y(t) | alive at T]`` = ``sum_{k>=1} NB(k; r+x, z) R_k`` (see the module docstring)."""
    out = np.zeros_like(x)
    idx = np.flatnonzero(t > 0)
    if idx.size == 0:
        return out
    n = r + x[idx]
    bx = b + x[idx]
    abx = a + b + x[idx]
    aT = alpha + T[idx]
    log_z = np.log(t[idx]) - np.log(aT + t[idx])
    z = np.exp(log_z)
    log_w = -n * np.log1p(t[idx] / aT)  # NB(0)
    R = np.zeros_like(n)
    rho = np.ones_like(n)
    total = np.zeros_like(n)
    for k in range(1, _NB_MAXITER + 1):
        log_w = log_w + np.log((n + (k - 1)) / k) + log_z
        R = R + rho
        rho = rho * ((bx + (k - 1)) / (abx + (k - 1)))
        w = np.exp(log_w)
        total = total + w * R
        theta = np.maximum((n + k) / (k + 1.0), 1.0) * z  # bounds every later ratio w_{j+1}/w_j
        with np.errstate(divide="ignore", invalid="ignore"):
            tail = w * (R * theta / (1.0 - theta) + theta / (1.0 - theta) ** 2)
        done = (theta < 1.0) & (tail <= _NB_TOL * total)
        if done.all():
            out[idx] = total
            return out
        if k == _NB_MAXITER:
            warnings.warn(
                "BG/NBD expected_purchases: series not converged for "
                f"{int((~done).sum())} row(s) (t very large relative to alpha + T)",
                RuntimeWarning,
                stacklevel=3,
            )
            out[idx] = total
            return out
        if done.any():
            out[idx[done]] = total[done]
            keep = ~done
            idx, n, bx, abx, log_z, z, log_w, R, rho, total = (
                v[keep] for v in (idx, n, bx, abx, log_z, z, log_w, R, rho, total)
            )
    return out  # pragma: no cover


# ---------------------------------------------------------------------- fitting


def _prepare_fit(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None, penalizer: float
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    xa, ta, Ta = (v.ravel() for v in _summary(x, t_x, T))
    if xa.size == 0:
        raise ValueError("cannot fit on empty input (no customers)")
    if weights is None:
        w = np.ones_like(xa)
    else:
        w = _as_float_array("weights", weights)
        if w.size != xa.size:
            raise ValueError(f"weights has {w.size} values for {xa.size} customers")
        w = w.ravel()
        if (w < 0).any():
            raise ValueError(f"weights must be >= 0; violated by {_first_bad(w < 0)}")
    pen = float(penalizer)
    if not (math.isfinite(pen) and pen >= 0):
        raise ValueError(f"penalizer must be finite and >= 0, got {penalizer!r}")
    keep = w > 0
    if not keep.any():
        raise ValueError("all weights are zero: nothing to fit")
    xa, ta, Ta, w = xa[keep], ta[keep], Ta[keep], w[keep]
    if not (xa > 0).any():
        raise ValueError(
            "no customer has a repeat purchase (all x == 0): the purchase rate and dropout "
            "process are not identifiable"
        )
    (ux, ut, uT), inv = _group_rows(xa, ta, Ta)
    uw = np.asarray(np.bincount(inv, weights=w, minlength=ux.size), dtype=np.float64)
    return ux, ut, uT, uw


def _start_rate(x: FloatArray, T: FloatArray, w: FloatArray) -> float:
    """Observed repeat-purchase rate per time unit (the moment start for ``r / alpha``)."""
    return float(np.sum(w * x) / np.sum(w * T))


def _minimize(objective: Any, theta0: FloatArray, name: str) -> FloatArray:
    from scipy import optimize  # only fitting needs it (scoring imports this module too)

    lo, hi = math.log(PARAM_MIN), math.log(PARAM_MAX)
    theta0 = np.clip(theta0, lo, hi)
    res = optimize.minimize(
        objective,
        theta0,
        method="L-BFGS-B",
        bounds=[(lo, hi)] * theta0.size,
        options={"maxiter": 1000, "ftol": 1e-13, "gtol": 1e-8},
    )
    if not np.all(np.isfinite(res.x)) or not np.isfinite(res.fun):
        raise RuntimeError(f"{name} fit failed: {res.message}")
    if not res.success and np.max(np.abs(res.jac)) > 1e-4:
        warnings.warn(
            f"{name} fit may not have converged: {res.message} "
            f"(max |gradient| {np.max(np.abs(res.jac)):.2g})",
            RuntimeWarning,
            stacklevel=3,
        )
    return np.asarray(res.x, dtype=np.float64)


def fit_pareto_nbd(
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    penalizer: float = 0.0,
) -> ParetoNBD:
    """Maximum-likelihood Pareto/NBD fit to per-customer ``(x, t_x, T)`` (caller's time unit).

    ``weights`` are per-row counts (or any non-negative weights); rows with weight 0 are
    ignored. Raises ``ValueError`` on invalid input, empty input or when no customer has a
    repeat purchase (the model is then not identifiable).
    """
    x_, t_, T_, w = _prepare_fit(x, t_x, T, weights, penalizer)
    W = float(np.sum(w))
    (x1, T1), i1 = _group_rows(x_, T_)
    (x2, t2), i2 = _group_rows(x_, t_)
    pen = float(penalizer)

    def objective(theta: FloatArray) -> float:
        r, alpha, s, beta = np.exp(theta)
        k1, k2 = _pnbd_pair_terms(r, alpha, s, beta, x1, T1, x2, t2)
        ll = np.logaddexp(k1[i1], k2[i2])
        val = -float(np.sum(w * ll)) / W + pen * float(np.sum(theta * theta))
        return val if math.isfinite(val) else 1e300

    rate = _start_rate(x_, T_, w)
    theta0 = np.log([1.0, 1.0 / rate, 1.0, float(np.sum(w * T_) / W)])
    r, alpha, s, beta = np.exp(_minimize(objective, theta0, "Pareto/NBD"))
    return ParetoNBD(r=float(r), alpha=float(alpha), s=float(s), beta=float(beta))


def fit_bg_nbd(
    x: ArrayLike,
    t_x: ArrayLike,
    T: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    penalizer: float = 0.0,
) -> BGNBD:
    """Maximum-likelihood BG/NBD fit to per-customer ``(x, t_x, T)`` (caller's time unit).

    ``weights`` are per-row counts (or any non-negative weights); rows with weight 0 are
    ignored. Raises ``ValueError`` on invalid input, empty input or when no customer has a
    repeat purchase (the model is then not identifiable).
    """
    x_, t_, T_, w = _prepare_fit(x, t_x, T, weights, penalizer)
    W = float(np.sum(w))
    pen = float(penalizer)
    (ux,), ix = _group_rows(x_)

    def objective(theta: FloatArray) -> float:
        r, alpha, a, b = np.exp(theta)
        ll = _bgnbd_ll(r, alpha, a, b, x_, t_, T_, (ux, ix))
        val = -float(np.sum(w * ll)) / W + pen * float(np.sum(theta * theta))
        return val if math.isfinite(val) else 1e300

    rate = _start_rate(x_, T_, w)
    theta0 = np.log([1.0, 1.0 / rate, 1.0, 1.0])
    r, alpha, a, b = np.exp(_minimize(objective, theta0, "BG/NBD"))
    return BGNBD(r=float(r), alpha=float(alpha), a=float(a), b=float(b))


# ----------------------------------------------------------------------------------------------
# Fan features: the two models on the fans' orders, as columns of the tier model


BTYD_COLUMNS: tuple[str, ...] = (
    "fan__pnbd_expected_orders",
    "fan__pnbd_p_alive",
    "fan__bgnbd_expected_orders",
    "fan__bgnbd_p_alive",
)
"""Fan features derived from fitted buy-till-you-die models (see :class:`FanBtyd`)."""

BTYD_INPUTS: tuple[str, ...] = (
    "fan__orders_all",
    "fan__days_since_first_order",
    "fan__days_since_last_order",
)
"""The :mod:`features.fans` columns the models read."""

DAYS_PER_WEEK = 7.0
MIN_BUYERS = 50
"""Fewer buyers than this (or no repeat buyer) and the models are not fitted."""


def fan_summary(
    orders: ArrayLike, days_since_first: ArrayLike, days_since_last: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, NDArray[np.bool_]]:
    """``(x, t_x, T, buyer)`` in weeks from the fan features :data:`BTYD_INPUTS`.

    A purchase is an order event: ``x`` = orders - 1. Times are whole 24-hour days counted
    back from the cutoff of :func:`features.fans.fan_features` (the day index + 1, ``ceil`` of
    the days since), over 7: ``T`` from the first order's day, ``t_x`` = the first order's day
    minus the last one's. With a midnight cutoff these are ``lifetimes``' daily periods, in
    weeks; repeat orders on one day count as repeats (the day collapse ``lifetimes`` does needs
    distinct order days, which the fan SQL leaves out for its cost; on CDNOW the Pareto/NBD's
    dormancy AUC moved by 0.001 or less either way). ``buyer`` marks fans with an order;
    other rows hold zeros.
    """
    n_orders = np.asarray(orders, dtype="float64")
    first = np.asarray(days_since_first, dtype="float64")
    last = np.asarray(days_since_last, dtype="float64")
    buyer = (n_orders >= 1) & np.isfinite(first) & np.isfinite(last) & (first > 0)
    first_day = np.where(buyer, np.ceil(np.where(buyer, first, 1.0)), 1.0)
    last_day = np.where(buyer, np.ceil(np.where(buyer, last, 1.0)), 1.0)
    x = np.where(buyer, np.floor(n_orders) - 1, 0.0)
    T = first_day / DAYS_PER_WEEK
    t_x = np.where(buyer & (x > 0), (first_day - last_day) / DAYS_PER_WEEK, 0.0)
    return x, np.clip(t_x, 0.0, T), T, buyer


@dataclass(frozen=True)
class FanBtyd:
    """A Pareto/NBD and a BG/NBD fitted on the buyers of one cutoff, and the tier window.

    :meth:`columns` applies them in closed form to fan features (any cutoff): the expected
    number of orders in the next ``horizon_days`` and the probability of being alive, per
    model. Fans without an order get NaN (the models describe buyers).
    """

    pareto: ParetoNBD
    bg: BGNBD
    horizon_days: int
    fitted_at: str = ""
    n_buyers: int = 0

    def columns(self, feats: Any) -> dict[str, FloatArray]:
        """:data:`BTYD_COLUMNS` for ``feats`` (a frame or a mapping of :data:`BTYD_INPUTS`
        arrays)."""
        x, t_x, T, buyer = fan_summary(
            *(np.asarray(feats[c], dtype="float64") for c in BTYD_INPUTS)
        )
        out = {c: np.full(len(x), np.nan) for c in BTYD_COLUMNS}
        if buyer.any():
            xb, tb, Tb = x[buyer], t_x[buyer], T[buyer]
            h = self.horizon_days / DAYS_PER_WEEK
            out["fan__pnbd_expected_orders"][buyer] = self.pareto.expected_purchases(h, xb, tb, Tb)
            out["fan__pnbd_p_alive"][buyer] = self.pareto.p_alive(xb, tb, Tb)
            out["fan__bgnbd_expected_orders"][buyer] = self.bg.expected_purchases(h, xb, tb, Tb)
            out["fan__bgnbd_p_alive"][buyer] = self.bg.p_alive(xb, tb, Tb)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "pareto_nbd": self.pareto.to_dict(),
            "bg_nbd": self.bg.to_dict(),
            "horizon_days": self.horizon_days,
            "fitted_at": self.fitted_at,
            "n_buyers": self.n_buyers,
            "time_unit": "week",
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FanBtyd:
        return cls(
            ParetoNBD.from_dict(d["pareto_nbd"]),
            BGNBD.from_dict(d["bg_nbd"]),
            int(d["horizon_days"]),
            str(d.get("fitted_at", "")),
            int(d.get("n_buyers", 0)),
        )


def fit_fan_btyd(feats: Any, horizon_days: int, fitted_at: str = "") -> FanBtyd | None:
    """Fit both models on the buyers among ``feats`` (fan features at one cutoff).

    Returns None when there are fewer than :data:`MIN_BUYERS` buyers or no repeat buyer: the
    models are then not identifiable and the tier model does without their columns (NaN).
    """
    x, t_x, T, buyer = fan_summary(*(np.asarray(feats[c], dtype="float64") for c in BTYD_INPUTS))
    xb, tb, Tb = x[buyer], t_x[buyer], T[buyer]
    if len(xb) < MIN_BUYERS or not (xb > 0).any():
        return None
    return FanBtyd(
        fit_pareto_nbd(xb, tb, Tb), fit_bg_nbd(xb, tb, Tb), int(horizon_days), fitted_at, len(xb)
    )
