"""Anomaly-detection metrics of benchmarks/eval_anomaly.py: AUC-PR and VUS-PR as TSB-AD defines them, event scores.

AUC-PR and VUS-PR follow TSB-AD 1.5 (Liu and Paparrizos, NeurIPS 2024; `TSB_AD/evaluation/basic_metrics.py`) so
that the numbers read like its leaderboard's, but in NumPy only: its package pins numpy<2, and its VUS loop over
thresholds and buffer widths is slow. benchmarks/check_anomaly_metrics.py compares these functions with TSB-AD's on
fixed arrays; tests/test_anomaly_metrics.py holds hand-checked cases and values recorded from TSB-AD.

- `average_precision`: the point-wise area under the precision-recall curve (TSB-AD's `metric_PR`, scikit-learn's
  `average_precision_score`): sum over distinct thresholds of (recall step) x precision.
- `vus_pr`: the volume under the range-based precision-recall surface (TSB-AD's `RangeAUC_volume_opt`). Each
  labelled event gets a soft buffer on both sides (a square-root ramp over half of `window`), which credits scores
  that rise a little early or late; the range precision-recall curve is averaged over the buffer widths
  0 ... `window`. Recall is also weighted by the share of events touched (existence reward). TSB-AD takes `window`
  from the series' autocorrelation: `periodicity_window`.
- `event_counts` / `EventCounts`: decisions at a threshold, counted as events (runs of labelled or of flagged
  points), which is how an operator reads alerts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TSB_AD_THRESHOLDS = 250  # TSB-AD's `thre`: the score levels the VUS curves are drawn through
TSB_AD_MAX_LAG = 400  # autocorrelation lags find_length_rank reads
TSB_AD_FIRST_LAG = 3  # lags below it are skipped (a series always resembles its last values)
TSB_AD_LONGEST_PERIOD = 300  # a longer (or no) period falls back to TSB_AD_DEFAULT_WINDOW
TSB_AD_DEFAULT_WINDOW = 125
TSB_AD_PERIOD_PREFIX = 20_000  # find_length_rank reads at most this many values


def label_events(labels: np.ndarray) -> list[tuple[int, int]]:
    """Runs of nonzero labels as (first, last) index pairs, both inclusive (TSB-AD's `range_convers_new`)."""
    padded = np.concatenate([[0], (np.asarray(labels) > 0).astype(np.int8), [0]])
    steps = np.diff(padded)
    return list(zip(np.flatnonzero(steps == 1).tolist(), (np.flatnonzero(steps == -1) - 1).tolist()))


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float:
    """Point-wise AUC-PR: the mean precision at the recall steps of thresholds at every distinct score, high to low.

    Tied scores are one threshold (all flagged together), as in scikit-learn's `average_precision_score`."""
    labels = np.asarray(labels) > 0
    scores = np.asarray(scores, dtype=np.float64)
    positives = int(labels.sum())
    if positives == 0:
        return float("nan")
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(labels[order])
    flagged = np.arange(1, len(scores) + 1)
    last_of_tie = np.flatnonzero(np.diff(scores[order], append=-np.inf) != 0)  # where the next score differs
    precision = hits[last_of_tie] / flagged[last_of_tie]
    recall = hits[last_of_tie] / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def _buffered_spans(events: list[tuple[int, int]], window: int, length: int) -> list[tuple[int, int]]:
    """Events widened by window // 2 on each side, overlapping ones merged (TSB-AD's `new_sequence`)."""
    half = window // 2
    spans: list[tuple[int, int]] = []
    start = max(events[0][0] - half, 0)
    for (_, end), (next_start, _) in zip(events[:-1], events[1:]):
        if end + half < next_start - half:
            spans.append((start, end + half))
            start = next_start - half
    spans.append((start, min(events[-1][1] + half, length - 1)))
    return spans


def _soft_labels(labels: np.ndarray, events: list[tuple[int, int]], window: int) -> np.ndarray:
    """1 on events, a square-root ramp over window // 2 points on each side, capped at 1 (TSB-AD's `sequencing`)."""
    soft = labels.astype(np.float64)
    length, half = len(soft), window // 2
    for start, end in events:
        after = np.arange(end + 1, min(end + half + 1, length))
        soft[after] += np.sqrt(1 - (after - end) / window)
        before = np.arange(max(start - half, 0), start)
        soft[before] += np.sqrt(1 - (start - before) / window)
    return np.minimum(soft, 1.0)


def vus_pr(labels: np.ndarray, scores: np.ndarray, window: int, thresholds: int = TSB_AD_THRESHOLDS) -> float:
    """TSB-AD's VUS-PR: the range-based average precision averaged over buffer widths 0 ... `window`.

    At each of `thresholds` score levels (evenly spaced ranks of the sorted scores) and each buffer width w:
    TP = sum of the soft labels at flagged points; recall = min(TP / ((P + N_w) / 2), 1) x (share of buffered events
    with a flag), where P counts labelled points and N_w the labelled points plus the buffer's flagged soft labels;
    precision = TP / flagged points. Only the buffers and events are read point by point, so it is fast on long
    series."""
    labels = (np.asarray(labels) > 0).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    events = label_events(labels)
    if not events:
        return float("nan")
    length, positives = len(scores), float(labels.sum())
    ascending = np.sort(scores)
    levels = ascending[::-1][np.linspace(0, length - 1, thresholds).astype(int)]
    flagged_counts = length - np.searchsorted(ascending, levels, side="left")  # scores >= level

    widest = _buffered_spans(events, window, length)
    points = np.concatenate([np.arange(start, end + 1) for start, end in widest])  # every point a width reads
    flags = scores[points][None, :] >= levels[:, None]  # (thresholds, points)
    flags_before = np.concatenate([np.zeros((thresholds, 1), np.int64), np.cumsum(flags, axis=1)], axis=1)
    flagged_events = flags @ labels[points]

    precision_areas = []
    for width in range(window + 1):
        soft = _soft_labels(labels, events, width)[points]
        true_positives = flags @ soft
        buffer_hits = true_positives - flagged_events  # the flagged soft labels outside the events
        spans = _buffered_spans(events, width, length)
        first = np.searchsorted(points, [start for start, _ in spans])
        last = np.searchsorted(points, [end for _, end in spans], side="right")
        touched = (flags_before[:, last] - flags_before[:, first] > 0).sum(axis=1) / len(spans)
        recall = np.minimum(true_positives / (positives + buffer_hits / 2), 1.0) * touched
        precision = true_positives / flagged_counts
        precision_areas.append(float(np.sum(np.diff(recall, prepend=0.0) * precision)))
    return float(np.mean(precision_areas))


def periodicity_window(values: np.ndarray) -> int:
    """TSB-AD's sliding window (`find_length_rank`, rank 1): the lag of the highest autocorrelation peak among lags
    3 ... 400 of the first 20,000 values, or 125 when there is none or it lies outside 3 ... 300.

    NaN are interpolated linearly first (TSB-AD's series have none)."""
    values = np.asarray(values, dtype=np.float64)[:TSB_AD_PERIOD_PREFIX]
    observed = np.isfinite(values)
    if observed.sum() < 2:
        return TSB_AD_DEFAULT_WINDOW
    values = np.interp(np.arange(len(values)), np.flatnonzero(observed), values[observed])
    centred = values - values.mean()
    size = 1 << int(np.ceil(np.log2(2 * len(centred))))  # zero-padded: linear, not circular, correlation
    spectrum = np.fft.rfft(centred, size)
    autocovariance = np.fft.irfft(spectrum * np.conj(spectrum), size)[: TSB_AD_MAX_LAG + 1]
    if autocovariance[0] <= 0:
        return TSB_AD_DEFAULT_WINDOW
    correlation = (autocovariance / autocovariance[0])[TSB_AD_FIRST_LAG:]
    inner = correlation[1:-1]
    peaks = np.flatnonzero((inner > correlation[:-2]) & (inner > correlation[2:])) + 1
    if len(peaks) == 0:
        return TSB_AD_DEFAULT_WINDOW
    peak = int(peaks[np.argmax(correlation[peaks])])
    if not TSB_AD_FIRST_LAG <= peak <= TSB_AD_LONGEST_PERIOD:
        return TSB_AD_DEFAULT_WINDOW
    return peak + TSB_AD_FIRST_LAG


@dataclass(frozen=True)
class EventCounts:
    """Decisions at one threshold, counted by events; add the counts of several series to pool them."""

    true_events: int
    detected_events: int  # true events with a flag inside them (or within the tolerance after them)
    predicted_events: int  # runs of flagged points
    correct_predictions: int  # predicted events that touch a true event (or its tolerance)

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(self.true_events + other.true_events, self.detected_events + other.detected_events,
                           self.predicted_events + other.predicted_events,
                           self.correct_predictions + other.correct_predictions)

    @property
    def precision(self) -> float:
        return self.correct_predictions / self.predicted_events if self.predicted_events else float("nan")

    @property
    def recall(self) -> float:
        return self.detected_events / self.true_events if self.true_events else float("nan")

    @property
    def f1(self) -> float:
        """The harmonic mean of precision and recall; 0 when nothing was predicted but events exist."""
        if not self.true_events:
            return float("nan")
        if not self.predicted_events or not (self.precision + self.recall):
            return 0.0
        return 2 * self.precision * self.recall / (self.precision + self.recall)


def event_counts(labels: np.ndarray, flags: np.ndarray, tolerance: int = 0) -> EventCounts:
    """Count labelled events detected by `flags` and flagged runs that are right.

    A true event is detected when a flagged point falls inside it or at most `tolerance` points after its end (a
    causal detector may need a few values to be sure); a predicted event (run of flagged points) is correct when it
    overlaps a true event extended the same way."""
    labels = np.asarray(labels) > 0
    flags = np.asarray(flags, dtype=bool)
    extended = labels.copy()
    true_events = label_events(labels)
    for _, end in true_events:
        extended[end + 1 : end + 1 + tolerance] = True
    detected = sum(bool(flags[start : end + 1 + tolerance].any()) for start, end in true_events)
    predicted = label_events(flags)
    correct = sum(bool(extended[start : end + 1].any()) for start, end in predicted)
    return EventCounts(len(true_events), detected, len(predicted), correct)
