"""Evaluate anomaly detection from Toto's predictive distribution against four baselines, on data the project has
offline; write the tables into docs/anomaly.md (section `anomaly-eval`) and the figure docs/anomaly-eval.png.

    python benchmarks/eval_anomaly.py            # every series (tens of minutes on two cores)
    python benchmarks/eval_anomaly.py --quick    # two base series at half the length, for development

Data (benchmarks/anomaly_data.py): aeon's labelled anomaly series, and sub-daily validation series of the embedded
model (never trained on) copied once per injected anomaly family plus a clean copy. Scorers: the baselines of
benchmarks/anomaly_baselines.py and `ForecastPipeline.detect` (`TotoScorer`, a thin adapter). Metrics
(benchmarks/anomaly_metrics.py) on the evaluated stretch only (the history before it is context):

- AUC-PR and VUS-PR as TSB-AD computes them, averaged over the series of a family (VUS's buffer window is TSB-AD's
  autocorrelation period of the clean series, one per base series, so every family of a series is scored alike);
- events at a threshold: precision, recall and F1 over the events of all series of a family pooled, an event
  detected when a flag falls inside it or at most EVENT_TOLERANCE values after. Toto flags at its calibrated
  budget (`is_anomaly_combined`, default settings: one alert per day of the series' clock; a series without a
  clock at UNCLOCKED_FALSE_ALARM_RATE). The baselines have no calibrated threshold: each is flagged above the score
  that gives, on the clean copy of the same series, the share of flagged values Toto has there (on aeon's series,
  on the values labelled normal). So every scorer raises the same number of false alarms on clean data, and the
  event scores compare what each catches at that price. Without Toto, the baselines match the nominal budget.

Baseline scores are cached under --cache (keyed by the series' values), Toto's never are: its detector changes.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.anomaly_baselines import BASELINES, Scorer, Scores  # noqa: E402
from benchmarks.anomaly_data import (  # noqa: E402
    BASE_SERIES,
    CLEAN,
    FAMILIES,
    LABELLED,
    STRETCH_DAYS,
    LabelledSeries,
    aeon_series,
    injected_series,
)
from benchmarks.anomaly_metrics import (  # noqa: E402
    EventCounts,
    average_precision,
    event_counts,
    label_events,
    periodicity_window,
    vus_pr,
)
from benchmarks.report import command_line, markdown_table, write_section  # noqa: E402

if TYPE_CHECKING:
    from toto.anomaly.detector import DetectionSettings
    from toto.pipeline import ForecastPipeline

ANOMALY_MD = REPO / "docs" / "anomaly.md"
FIGURE = REPO / "docs" / "anomaly-eval.png"
SECTION = "anomaly-eval"
EVENT_TOLERANCE = 3  # values after an event in which a flag still detects it
UNCLOCKED_FALSE_ALARM_RATE = 1e-3  # Toto's budget on series without a clock (alerts per day need one)
QUICK_BASES = ("seattle-temps/temp", "CGM/glucose")
QUICK_SHORTER = 2.0


class TotoScorer(Scorer):
    """`ForecastPipeline.detect` with default settings behind the scorers' interface (loaded on first use)."""

    causal = True

    def __init__(self, checkpoint: str) -> None:
        self.name = f"Toto ({checkpoint})"
        self.checkpoint = checkpoint
        self.pipeline: ForecastPipeline | None = None

    def __call__(self, values: np.ndarray, interval_seconds: float | None, period: int) -> Scores:
        from toto.pipeline import ForecastPipeline

        if self.pipeline is None:
            self.pipeline = ForecastPipeline.from_pretrained(self.checkpoint)
        detection = self.pipeline.detect(values[None], interval_seconds or 1.0, nominal_settings(interval_seconds))
        return Scores(detection.anomaly_score[0], detection.combined_score[0], detection.is_anomaly_combined[0])


def nominal_settings(interval_seconds: float | None) -> DetectionSettings:
    """Toto's default settings; an explicit false-alarm rate where there is no clock to count alerts per day."""
    from toto.anomaly.detector import DetectionSettings

    if interval_seconds is None:
        return DetectionSettings(false_alarm_rate=UNCLOCKED_FALSE_ALARM_RATE)
    return DetectionSettings()


def nominal_rate(interval_seconds: float | None) -> float:
    """The share of values Toto's default budget allows to be flagged on a series with this clock."""
    return nominal_settings(interval_seconds).alarm_rate(interval_seconds or 1.0)


@dataclass
class Result:
    """What one scorer gave on one series, on its evaluated stretch."""

    scores: np.ndarray  # (time,) combined, NaN filled with the lowest score
    flags: np.ndarray | None  # (time,) the scorer's own decisions (Toto), or None
    seconds: float
    cached: bool  # read from --cache (seconds are then those of the run that filled it)
    auc_pr: float = float("nan")
    vus_pr: float = float("nan")
    events: EventCounts = field(default_factory=lambda: EventCounts(0, 0, 0, 0))
    flagged_share: float = float("nan")  # flagged values among those labelled normal
    alerts: int = 0  # flagged runs among the normal values


def series_key(series: LabelledSeries) -> str:
    return f"{series.name} | {series.family}"


def cached_scores(scorer: Scorer, series: LabelledSeries, cache: Path | None) -> tuple[Scores, float, bool]:
    """The scorer's Scores, the seconds they took and whether they come from the cache (then the seconds are those
    of the run that filled it)."""
    digest = hashlib.sha256(series.values.tobytes() + f"{series.period}".encode()).hexdigest()[:16]
    path = None if cache is None else cache / f"{scorer.name.replace(' ', '_')}-{digest}.npz"
    if path is not None and path.exists():
        stored = np.load(path)
        return Scores(stored["per_variate"], stored["combined"]), float(stored["seconds"]), True
    start = time.perf_counter()
    scores = scorer(series.values, series.interval_seconds, series.period)
    seconds = time.perf_counter() - start
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, per_variate=scores.per_variate, combined=scores.combined, seconds=seconds)
    return scores, seconds, False


def evaluated(series: LabelledSeries, scores: Scores, seconds: float, cached: bool) -> Result:
    combined = scores.combined[series.evaluate_from :].astype(np.float64)
    finite = np.isfinite(combined)
    filled = np.where(finite, combined, np.min(combined[finite]) if finite.any() else 0.0)
    flags = None if scores.flags is None else scores.flags[series.evaluate_from :].astype(bool)
    return Result(filled, flags, seconds, cached)


def reference_normals(series: LabelledSeries, clean: dict[str, LabelledSeries]) -> tuple[LabelledSeries, np.ndarray]:
    """The series whose normal values set a baseline's threshold for `series` (its clean copy, else itself), and
    the mask of those normal values on the evaluated stretch."""
    reference = clean.get(series.name, series)
    return reference, ~reference.labels[reference.evaluate_from :]


def score_all(series_list: list[LabelledSeries], scorers: list[Scorer], cache: Path | None,
              ) -> tuple[dict[str, dict[str, Result]], dict[str, str]]:
    """results[scorer][series key]; errors[scorer] for a scorer that failed (it is then left out)."""
    results: dict[str, dict[str, Result]] = {}
    errors: dict[str, str] = {}
    for scorer in scorers:
        results[scorer.name] = {}
        started = time.perf_counter()
        for index, series in enumerate(series_list):
            if not series.scored_by_baselines and not isinstance(scorer, TotoScorer):
                continue
            try:
                use_cache = None if isinstance(scorer, TotoScorer) else cache
                scores, seconds, cached = cached_scores(scorer, series, use_cache)
            except Exception as error:  # the detector under development may not run: report, keep the rest
                errors[scorer.name] = "".join(traceback.format_exception_only(error)).strip()
                traceback.print_exc()
                del results[scorer.name]
                break
            results[scorer.name][series_key(series)] = evaluated(series, scores, seconds, cached)
            print(f"{scorer.name:18} {index + 1:3}/{len(series_list)} {series_key(series):45} {seconds:7.1f} s"
                  f"{' (cached)' if cached else ''}, {time.perf_counter() - started:6.0f} s in all", flush=True)
    return results, errors


def threshold_and_measure(series_list: list[LabelledSeries], results: dict[str, dict[str, Result]],
                          toto_name: str | None) -> None:
    """Flag every baseline at Toto's false-alarm share on the reference normals (the nominal budget without Toto),
    then fill in each result's metrics."""
    clean = {s.name: s for s in series_list if s.family == CLEAN}
    by_key = {series_key(s): s for s in series_list}
    references = {s.name: clean.get(s.name, s) for s in series_list}
    windows = {name: periodicity_window(s.values[0, s.evaluate_from :]) for name, s in references.items()}
    matched: dict[str, float] = {}
    for series in series_list:
        reference, normals = reference_normals(series, clean)
        toto = results.get(toto_name or "", {}).get(series_key(reference))
        if toto is not None and toto.flags is not None:
            matched[series.name] = float(toto.flags[normals].mean())
        else:
            matched[series.name] = nominal_rate(series.interval_seconds)
    for scorer_results in results.values():
        for key, result in scorer_results.items():
            series = by_key[key]
            reference, normals = reference_normals(series, clean)
            if result.flags is None:
                reference_scores = scorer_results[series_key(reference)].scores[normals]
                threshold = np.quantile(reference_scores, 1 - matched[series.name], method="higher")
                result.flags = result.scores > threshold
            labels = series.labels[series.evaluate_from :]
            if labels.any():
                result.auc_pr = average_precision(labels, result.scores)
                result.vus_pr = vus_pr(labels, result.scores, windows[series.name])
            result.events = event_counts(labels, result.flags, EVENT_TOLERANCE)
            result.flagged_share = float(result.flags[~labels].mean())
            result.alerts = event_counts(np.zeros_like(labels), result.flags & ~labels).predicted_events


# ----- tables --------------------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> str:
    finite = [v for v in values if np.isfinite(v)]
    return f"{np.mean(finite):.3f}" if finite else "-"


def _groups(series_list: list[LabelledSeries]) -> list[tuple[str, list[LabelledSeries]]]:
    """Rows of the score tables: each injected family, all injected, each aeon series with labels, all of them."""
    injected = [s for s in series_list if s.family in FAMILIES]
    rows = [(family, [s for s in injected if s.family == family]) for family in FAMILIES]
    rows = [(name, members) for name, members in rows if members]
    rows.append(("**all injected**", injected))
    labelled = [s for s in series_list if s.family == LABELLED]
    rows += [(s.name, [s]) for s in labelled]
    if len(labelled) > 1:
        rows.append(("**all aeon**", labelled))
    return rows


def score_table(series_list: list[LabelledSeries], results: dict[str, dict[str, Result]], metric: str) -> str:
    names = list(results)
    rows: list[list[object]] = []
    for group, members in _groups(series_list):
        row: list[object] = [group, len(members), sum(s.events for s in members)]
        for name in names:
            row.append(_mean([getattr(results[name][series_key(s)], metric) for s in members]))
        rows.append(row)
    return markdown_table(["family / series", "series", "events", *names], rows)


def event_table(series_list: list[LabelledSeries], results: dict[str, dict[str, Result]]) -> str:
    names = list(results)
    rows: list[list[object]] = []
    for group, members in _groups(series_list):
        row: list[object] = [group, sum(s.events for s in members)]
        for name in names:
            pooled = sum((results[name][series_key(s)].events for s in members), EventCounts(0, 0, 0, 0))
            row.append(f"{pooled.f1:.2f} ({pooled.precision:.2f} / {pooled.recall:.2f})"
                       if pooled.predicted_events else f"0.00 (- / {pooled.recall:.2f})")
        rows.append(row)
    return markdown_table(["family / series", "events", *[f"{n}: F1 (P / R)" for n in names]], rows)


def clean_table(series_list: list[LabelledSeries], results: dict[str, dict[str, Result]], toto_name: str) -> str:
    rows: list[list[object]] = []
    for series in series_list:
        if series.family != CLEAN:
            continue
        result = results[toto_name][series_key(series)]
        scored = series.values.shape[1] - series.evaluate_from
        days = scored * (series.interval_seconds or float("nan")) / 86_400
        rows.append([series.name, series.values.shape[0], scored, f"{nominal_rate(series.interval_seconds):.2e}",
                     f"{result.flagged_share:.2e}", result.alerts,
                     f"{result.alerts / days:.2f}" if np.isfinite(days) else "-"])
    return markdown_table(["clean series", "variates", "values scored", "budget (share)", "flagged share",
                           "alerts (flagged runs)", "alerts per day"], rows)


def data_table(series_list: list[LabelledSeries]) -> str:
    rows: list[list[object]] = []
    for name in dict.fromkeys(s.name for s in series_list):
        members = [s for s in series_list if s.name == name]
        first = members[0]
        clock = "none" if first.interval_seconds is None else f"{first.interval_seconds:g} s"
        missing = float(np.isnan(first.values[:, first.evaluate_from :]).mean())
        families = ", ".join(f"{s.family} {s.events}" for s in members if s.family != CLEAN) or "clean only"
        rows.append([name, clock, first.values.shape[0], f"{first.evaluate_from} + "
                     f"{first.values.shape[1] - first.evaluate_from}", f"{missing:.1%}", first.period, families])
    return markdown_table(["series", "interval", "variates", "values (history + scored)", "missing",
                           "period", "families: events"], rows)


def timing_table(results: dict[str, dict[str, Result]], scorers: list[Scorer], series_list: list[LabelledSeries],
                 ) -> str:
    by_key = {series_key(s): s for s in series_list}
    rows: list[list[object]] = []
    for scorer in scorers:
        if scorer.name not in results:
            continue
        runs = results[scorer.name]
        values = sum(by_key[k].values.size for k in runs)
        seconds = sum(r.seconds for r in runs.values())
        rows.append([scorer.name, "yes" if scorer.causal else "no", f"{seconds:.0f}",
                     f"{1000 * seconds / max(values, 1) * 1000:.1f}"])
    return markdown_table(["scorer", "causal", "seconds", "ms per 1,000 values"], rows)


def plot(series_list: list[LabelledSeries], results: dict[str, dict[str, Result]], path: Path) -> None:
    """VUS-PR by family and scorer, and one example of each family with the labelled spans and the flags of the
    last scorer (Toto's when it ran)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    families = [f for f in FAMILIES if any(s.family == f for s in series_list)]
    example_base = next((b.name for b in BASE_SERIES if any(s.name == b.name and s.family == "broken_cycle"
                                                            for s in series_list)), series_list[-1].name)
    examples = [s for s in series_list if s.name == example_base and s.family in FAMILIES]
    figure = plt.figure(figsize=(13, 3.2 + 1.6 * len(examples)))
    grid = figure.add_gridspec(1 + len(examples), 1, height_ratios=[2.2] + [1] * len(examples), hspace=0.55)
    bars = figure.add_subplot(grid[0])
    width = 0.8 / len(names)
    for index, name in enumerate(names):
        heights = [np.nanmean([results[name][series_key(s)].vus_pr for s in series_list if s.family == f])
                   for f in families]
        bars.bar(np.arange(len(families)) + index * width, heights, width, label=name)
    bars.set_xticks(np.arange(len(families)) + 0.4 - width / 2, families)
    bars.set_ylabel("VUS-PR (mean over series)")
    bars.set_ylim(0, 1)
    bars.legend(ncol=len(names), fontsize=8, loc="upper left")
    flagger = names[-1]
    bars.set_title(f"Injected anomalies (benchmarks/eval_anomaly.py). Below, {example_base}: labelled spans "
                   f"shaded, {flagger}'s flags as dots, history left of the dotted line", fontsize=10)
    for row, series in enumerate(examples, start=1):
        axis = figure.add_subplot(grid[row])
        steps = np.arange(series.values.shape[1])
        axis.plot(steps, series.values[0], lw=0.6, color="0.3")
        for start, end in label_events(series.labels):
            axis.axvspan(start, end + 1, color="tab:red", alpha=0.25, lw=0)
        flags = results[flagger][series_key(series)].flags
        if flags is not None:
            flagged = np.flatnonzero(flags) + series.evaluate_from
            axis.plot(flagged, series.values[0, flagged], "o", ms=2.5, color="tab:blue")
        axis.axvline(series.evaluate_from, color="0.5", ls=":", lw=0.8)
        axis.set_ylabel(series.family, fontsize=8)
        axis.tick_params(labelsize=7)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def markdown(series_list: list[LabelledSeries], results: dict[str, dict[str, Result]], errors: dict[str, str],
             scorers: list[Scorer], toto_name: str, wall_seconds: float, quick: bool) -> str:
    import torch

    date = dt.date.today().isoformat()
    machine = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"
    parts = [f"Written by `{command_line()}` on {date} ({machine}; this run {wall_seconds / 60:.0f} min)."
             + (" **Quick run: a subset, for development only.**" if quick else "")]
    if errors:
        parts.append("Scorers that failed and are left out of the tables:\n\n"
                     + "\n".join(f"- {name}: `{message}`" for name, message in errors.items()))
    hourly, five_minute = STRETCH_DAYS["h"], STRETCH_DAYS["5min"]
    parts += [
        "### Data\n\nInjected families (benchmarks/anomaly_data.py) on sub-daily validation series of the embedded "
        f"model: hourly series give {hourly[0]:g} days of history and {hourly[1]:g} scored days, five-minute "
        f"ones {five_minute[0]:g} + {five_minute[1]:g} (divided by {QUICK_SHORTER:g} with --quick); aeon's "
        "series keep their own labels. `period`: steps per day, or TSB-AD's autocorrelation period without a "
        "clock.\n\n" + data_table(series_list),
        "### AUC-PR (point-wise, TSB-AD's `metric_PR`), mean over series\n\n"
        + score_table(series_list, results, "auc_pr"),
        "### VUS-PR (TSB-AD's, buffer window = its autocorrelation period of the clean series), mean over series\n\n"
        + score_table(series_list, results, "vus_pr"),
        f"### Events at the threshold: F1 (precision / recall), events of a family pooled\n\nAn event is detected "
        f"by a flag inside it or at most {EVENT_TOLERANCE} values after it; a flagged run is correct when it "
        f"touches one. {toto_name if toto_name in results else 'Toto'} flags at its calibrated budget; each "
        "baseline is flagged above the score that flags, on the clean copy of the same series (aeon: on the values "
        "labelled normal), the share Toto flags there"
        + ("" if toto_name in results else " (Toto did not run: the nominal budget)") + ".\n\n"
        + event_table(series_list, results),
    ]
    if toto_name in results:
        parts.append(f"### False alarms of {toto_name} on clean series\n\nThe default budget is one alert per day "
                     f"of the series' clock (UNCLOCKED_FALSE_ALARM_RATE = {UNCLOCKED_FALSE_ALARM_RATE:g} without "
                     "one); the baselines match Toto's flagged share by construction.\n\n"
                     + clean_table(series_list, results, toto_name))
    cached = sum(r.cached for runs in results.values() for r in runs.values())
    parts.append("### Time\n\nSeconds of scoring (one series at a time, on the machine above)"
                 + (f"; {cached} baseline scorings were read from --cache, with the seconds of the run that filled "
                    "it" if cached else "") + ".\n\n" + timing_table(results, scorers, series_list))
    parts.append(f"![scores by family and examples]({FIGURE.name})")
    return "\n\n".join(parts)


def write_markdown(text: str, path: Path = ANOMALY_MD) -> None:
    if not path.exists():
        path.write_text("# Anomaly detection\n")
    write_section(SECTION, text, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two base series at half the length, for checks")
    parser.add_argument("--checkpoint", default="toto-tiny", help="the model ForecastPipeline.detect runs")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "anomaly-eval", help="baseline score cache")
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.quick:
        bases = tuple(b for b in BASE_SERIES if b.name in QUICK_BASES)
        series_list = aeon_series()[:1] + injected_series(bases, shorter=QUICK_SHORTER)
    else:
        series_list = aeon_series() + injected_series()
    toto = TotoScorer(args.checkpoint)
    scorers: list[Scorer] = [make() for make in BASELINES] + [toto]
    results, errors = score_all(series_list, scorers, None if args.no_cache else args.cache)
    threshold_and_measure(series_list, results, toto.name if toto.name in results else None)
    text = markdown(series_list, results, errors, scorers, toto.name, time.perf_counter() - started, args.quick)
    write_markdown(text)
    plot(series_list, results, FIGURE)
    print(text)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
