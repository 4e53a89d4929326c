"""The anomaly metrics of benchmarks/anomaly_metrics.py: hand-checked cases, and values recorded from TSB-AD 1.5."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.anomaly_metrics import (
    EventCounts,
    average_precision,
    event_counts,
    label_events,
    periodicity_window,
    vus_pr,
)
from benchmarks.check_anomaly_metrics import cases

# TSB-AD 1.5's metric_PR, generate_curve(..., "opt", 250)[-1] and find_length_rank(scores, rank=1) on the cases of
# benchmarks/check_anomaly_metrics.py, printed by that script (run 2026-12-07 with numpy 1.26.4, scikit-learn 1.9.1,
# statsmodels 0.15.0).
TSB_AD_VALUES = {
    "two events": (1.000000000000000, 0.986111111111111, 125),
    "ties": (0.030376696758226, 0.051735251312541, 178),
    "events at the edges": (0.497836347361438, 0.516288981726315, 147),
    "close events, late score": (0.260367524121779, 0.656696582587614, 125),
    "blind score": (0.018417401465310, 0.028492739501084, 188),
    "seasonal series": (0.216115241681700, 0.182224309134992, 116),
    "seasonal values": (0.017207287391680, 0.023695270096908, 24),
    "period longer than 300": (0.019759665530015, 0.021815262189665, 125),
}


def test_label_events_are_inclusive_runs():
    assert label_events(np.array([1, 1, 0, 0, 1, 0, 1])) == [(0, 1), (4, 4), (6, 6)]
    assert label_events(np.zeros(4)) == []


def test_average_precision_by_hand():
    # ranked: 0.9 (hit: precision 1, recall 1/2), 0.8 (miss), 0.2 (hit: precision 2/3, recall 1)
    assert average_precision(np.array([0, 1, 0, 1]), np.array([0.1, 0.9, 0.8, 0.2])) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # tied scores are one threshold: at 1 precision 1/2 and recall 1/2, at 0 precision 1/2 and recall 1
    assert average_precision(np.array([1, 0, 1, 0]), np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(0.5)
    assert np.isnan(average_precision(np.zeros(5), np.arange(5.0)))


def test_vus_pr_of_a_perfect_score_is_one():
    labels = np.zeros(200, np.int64)
    labels[50:60] = labels[120] = 1
    assert vus_pr(labels, labels + 0.0, 20) == pytest.approx(1.0)


def test_vus_pr_credits_a_late_flag_through_the_buffer():
    # One labelled point (2), the score peaks one step late (3). Widths 0 and 1 have no buffer: only flagging
    # everything finds the event, AP = 1 x 1/5. Width 2 gives point 3 the soft label sqrt(1/2): at the top level
    # TP = sqrt(1/2), recall = TP / (1 + TP / 2), precision = TP; flagging all: recall 1,
    # precision (1 + 2 sqrt(1/2)) / 5.
    soft = np.sqrt(0.5)
    recall = soft / (1 + soft / 2)
    width_two = recall * soft + (1 - recall) * (1 + 2 * soft) / 5
    expected = (0.2 + 0.2 + width_two) / 3
    assert vus_pr(np.array([0, 0, 1, 0, 0]), np.array([0.0, 0.0, 0.0, 1.0, 0.0]), 2) == pytest.approx(expected)
    assert expected == pytest.approx(1 / 3)


def test_periodicity_window():
    assert periodicity_window(np.sin(2 * np.pi * np.arange(2000) / 24)) == 24
    assert periodicity_window(np.arange(1000.0)) == 125  # no autocorrelation peak: TSB-AD's default
    with_gaps = np.sin(2 * np.pi * np.arange(2000) / 24)
    with_gaps[100:110] = np.nan
    assert periodicity_window(with_gaps) == 24


def test_event_counts_with_a_tolerance_after_the_event():
    labels = np.array([0, 1, 1, 0, 0, 0, 1, 0, 0, 0])
    flags = np.array([0, 0, 1, 0, 0, 0, 0, 1, 0, 1])
    assert event_counts(labels, flags, tolerance=1) == EventCounts(2, 2, 3, 2)
    strict = event_counts(labels, flags, tolerance=0)
    assert strict == EventCounts(2, 1, 3, 1)
    assert (strict.precision, strict.recall, strict.f1) == pytest.approx((1 / 3, 1 / 2, 0.4))
    pooled = strict + event_counts(labels, np.zeros(10), tolerance=0)
    assert (pooled.recall, pooled.precision) == pytest.approx((1 / 4, 1 / 3))
    assert event_counts(labels, np.zeros(10)).f1 == 0.0


@pytest.mark.parametrize("name", sorted(TSB_AD_VALUES))
def test_matches_values_recorded_from_tsb_ad(name):
    labels, scores, window = cases()[name]
    auc_pr, vus, period = TSB_AD_VALUES[name]
    assert average_precision(labels, scores) == pytest.approx(auc_pr, abs=1e-12)
    assert vus_pr(labels, scores, window) == pytest.approx(vus, abs=1e-12)
    assert periodicity_window(scores) == period
