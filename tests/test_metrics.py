"""Code tier: forecast metrics on hand-computed examples."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import bias, coverage, interval_metrics, mape_median, pinball, wape


def test_wape_bias_and_mape_by_hand():
    y = np.array([100.0, 200.0, 0.0, np.nan])
    p = np.array([110.0, 150.0, 10.0, 5.0])
    # rows with a missing actual are ignored: |10| + |50| + |10| over 300
    assert wape(y, p) == pytest.approx(70 / 300)
    assert bias(y, p) == pytest.approx((10 - 50 + 10) / 300)
    # the zero actual has no percentage error: median of 0.10 and 0.25
    assert mape_median(y, p) == pytest.approx(0.175)


def test_coverage_and_pinball_by_hand():
    y = np.array([1.0, 5.0, 10.0, 20.0])
    lo = np.array([0.0, 6.0, 8.0, 10.0])
    hi = np.array([2.0, 9.0, 12.0, 15.0])
    assert coverage(y, lo, hi) == pytest.approx(0.5)
    # a perfect median forecast has zero pinball loss at q=0.5
    assert pinball(y, {0.5: y}) == 0.0
    loss = pinball(np.array([10.0]), {0.9: np.array([8.0])})
    assert loss == pytest.approx(0.9 * 2 / 10)


def test_interval_metrics_report_point_metrics_on_the_median():
    y = np.array([10.0, 20.0, 30.0])
    out = interval_metrics(y, y * 0.5, y, y * 2)
    assert out["wape"] == 0.0 and out["coverage_p10_p90"] == 1.0 and out["n"] == 3
    empty = interval_metrics(np.array([np.nan]), np.array([1.0]), np.array([1.0]), np.array([1.0]))
    assert empty["wape"] is None and empty["n"] == 0
    assert not math.isnan(out["rmsle"])
