"""The BOOM leaderboard from `results/<model>/all_results.csv` folders, computed as the publication does.

1. Configurations of the low-variance series, and of series where seasonal naive's MASE is 0 in some
   configuration, are scored unscaled (MAE and CRPS); all others are divided by seasonal naive's value for
   the same configuration (MASE and CRPS).
2. Before scaling, infinite values become NaN and NaNs take the model's mean over that part.
3. Each part is aggregated with the shifted geometric mean exp(mean(log(x + 1e-5))) - 1e-5, and ranked by
   each configuration's CRPS rank among all models (ties go to the model listed first), averaged.

Ties are broken by the order of the models, which the publication took from its folder listing and does not
state. The published mean ranks determine that order only where models tie, and only to their printed digits:
`recover_tie_order` searches for an order that reproduces them (`boom tie-order` runs it), and
`PUBLISHED_ORDER` is its result on the published results. With it, `boom_leaderboard.csv` is reproduced to
every printed digit; it is one order consistent with the publication, not necessarily the publication's own.
Other models follow it alphabetically and seasonal naive comes last, as in the publication. Only configurations
every model has are compared.

Results are checked as they are read (`read_results`): the columns the leaderboard uses must be there, and every
metric must be a number that is not negative (all of them are errors or losses). NaN and infinity are allowed:
GluonTS writes them where a configuration's scale is zero (an all-zero series), and step 2 handles them.
A model name found in several folders (your `results/toto` next to the published `toto`) is kept once per folder,
labelled with its folder; the first folder's seasonal naive is the baseline.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from boom.data import Term, load_properties, low_variance_series
from toto.validation import InputError

BASELINE = "seasonalnaive"
MASE = "eval_metrics/MASE[0.5]"
MAE = "eval_metrics/MAE[0.5]"
CRPS = "eval_metrics/mean_weighted_sum_quantile_loss"
EPSILON = 1e-5
GROUPINGS = ("domain", "frequency", "term", "type", "series")
# `recover_tie_order` on ../shared/boom/results and boom_leaderboard.csv (tests/test_boom_leaderboard.py reruns it).
PUBLISHED_ORDER = (
    "autoarima", "toto_2.0_4m", "moirai_1.1_base", "moirai_1.1_large", "moirai_1.1_small", "timer", "autoets",
    "toto_2.0_2.5b", "moirai_2_small", "timesfm_2_0_500m", "toto", "chronos_2", "time_moe_50M", "autotheta",
    "toto_2.0_313m", "timesfm_2_5_200m", "chronos_bolt_small", "toto_2.0_1b", "chronos_bolt_base", "time_moe_200M",
    "visionts", "toto_2.0_22m",
)


def shifted_gmean(values: Iterable[float] | pd.Series) -> float:
    """Geometric mean that tolerates zeros: exp(mean(log(x + eps))) - eps."""
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=np.float64) + EPSILON))) - EPSILON)


def read_results(file: str | Path) -> pd.DataFrame:
    """One `all_results.csv`, indexed by configuration (the last row of a repeated one), checked as it is read.

    Refuses, naming the file: a file that is not comma-separated, a missing column the leaderboard uses, and a
    metric that is not a number or is negative. NaN and +inf pass (see the module's docstring)."""
    with open(file, errors="replace") as f:
        header = f.readline()
    delimiter = next((d for d in ";\t|" if d in header), None)
    if delimiter and "," not in header:
        raise InputError(f"{file} is not comma-separated (its header is split by {delimiter!r}): write it with "
                         "commas, as `boom eval` does")
    try:
        frame = pd.read_csv(file)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise InputError(f"{file} is not a readable CSV ({str(error).strip()}): pass the all_results.csv that "
                         "`boom eval` wrote") from None
    required = ["dataset", MASE, MAE, CRPS]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise InputError(f"{file} has no column {missing[0]!r}: a results file has the columns of the "
                         f"all_results.csv that `boom eval` writes, among them {', '.join(required)}")
    for column in [c for c in frame.columns if c.startswith("eval_metrics/")]:
        values = pd.to_numeric(frame[column], errors="coerce")
        text = frame[column].notna() & values.isna()
        negative = values < 0
        for bad, why in ((text, "is not a number"), (negative, f"cannot be negative ({column} is an error or loss)")):
            if bad.any():
                row = int(np.argmax(bad.to_numpy()))
                value = frame[column].iloc[row]
                shown = repr(value) if isinstance(value, str) else f"{value:g}"
                raise InputError(f"{file}: column {column} holds {shown} for {frame['dataset'].iloc[row]}, which "
                                 f"{why}: fix or rerun that configuration")
        frame[column] = values
    return frame.drop_duplicates("dataset", keep="last").set_index("dataset")


def load_results(*results_dirs: str | Path, subset: str | None = None) -> dict[str, pd.DataFrame]:
    """Every `<dir>/<model>/all_results.csv` (`read_results`), keyed by model folder name, in the order given.

    A model name in several folders is kept once per folder, keyed by `<dir>/<model>` (as the folder was given).
    `subset="boomlet"` keeps only the 32 BOOMlet series.
    """
    folders = list(map(Path, results_dirs))
    repeated = [folder for i, folder in enumerate(folders) if folder.resolve() in {f.resolve() for f in folders[:i]}]
    if repeated:
        raise InputError(f"{repeated[0]} is given twice: pass each results folder once")
    files: list[Path] = []
    for results_dir in folders:
        found = sorted(results_dir.glob("*/all_results.csv"))
        if not found:
            raise FileNotFoundError(f"No <model>/all_results.csv under {results_dir}: pass the folder that "
                                    f"`boom eval --out` wrote (or ../shared/boom/results).")
        files += found
    names = Counter(file.parent.name for file in files)
    results = {file.parent.name if names[file.parent.name] == 1 else str(file.parent): read_results(file)
               for file in files}
    if subset is not None:
        keep = set(load_properties(subset=subset))
        results = {model: frame[frame.index.str.split("/").str[0].isin(keep)] for model, frame in results.items()}
    return results


def seasonal_naives(models: Iterable[str]) -> list[str]:
    """The seasonal naive results among `models`, in order: `seasonalnaive`, or `<dir>/seasonalnaive` where several
    folders hold one (`load_results`)."""
    return [model for model in models if Path(model).name == BASELINE]


def baseline(models: Iterable[str]) -> str:
    """The seasonal naive results the leaderboard scales by: the first folder's."""
    naive = seasonal_naives(models)
    if not naive:
        raise ValueError(f"The leaderboard scales by seasonal naive: add a `{BASELINE}` results folder (run "
                         f"`boom eval --model seasonalnaive`, or include ../shared/boom/results).")
    return naive[0]


def _fill_invalid(model: str, part: str, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.replace([np.inf, -np.inf], np.nan)
    empty = [column for column in frame.columns if frame[column].isna().all()]
    if empty:
        raise InputError(f"{model!r} has no finite value of {empty[0]} in any of its {len(frame)} {part} "
                         "configurations, so nothing to rank it by: fix or rerun its results")
    return frame.fillna(frame.mean())


def model_order(models: Iterable[str]) -> list[str]:
    """The tie-breaking order: published models as published, then others alphabetically, the baseline last."""
    models = list(models)
    last = baseline(models)
    published = [m for m in PUBLISHED_ORDER if m in models]
    return published + sorted(set(models) - set(published) - {last}) + [last]


def recover_tie_order(scores: pd.DataFrame, published: pd.DataFrame) -> list[str]:
    """A model order whose tie-breaking reproduces the published mean ranks to their printed digits.

    A model's mean rank is (its rank counting ties as losses, summed) plus, for every model tied with it on a
    configuration and ordered before it, one; divided by the number of configurations. So the ranks depend on
    the order only through the tied pairs. Starting from alphabetical order (seasonal naive last, as published),
    single moves of one model are kept while they bring the mean ranks closer to `published`'s `Rank-*`
    columns, until they match when rounded like the published table. Raises ValueError if they never match.
    """
    models = sorted(set(scores["model"]) - {BASELINE})
    parts = []
    for part in ("scaled", "unscaled"):
        rank_column = [c for c in published.columns if c.startswith("Rank-") and c.endswith(f"-{part}")]
        if not rank_column:
            continue
        crps = scores[scores["part"] == part].pivot(index="config", columns="model", values="crps")
        crps = crps[[*models, BASELINE]].to_numpy()
        losses = (crps[:, None, :] < crps[:, :, None]).sum(axis=(0, 2)) + len(crps)  # [model]
        ties = (crps[:, :, None] == crps[:, None, :]).sum(axis=0) - np.eye(crps.shape[1]) * len(crps)
        target = published.loc[[*models, BASELINE], rank_column[0]].to_numpy(dtype=float)
        parts.append((losses, ties, len(crps), target))

    def mismatch(order: list[int]) -> tuple[float, bool]:
        position = np.empty(len(order) + 1, dtype=int)
        position[order] = np.arange(len(order))
        position[-1] = len(order)  # seasonal naive last
        before = position[None, :] < position[:, None]  # [model, other]: other comes first
        total, exact = 0.0, True
        for losses, ties, count, target in parts:
            mean = (losses + (ties * before).sum(axis=1)) / count
            total += float(np.abs(mean - target).sum())
            exact &= bool(np.array_equal(np.round(mean, 3), target))
        return total, exact

    order = list(range(len(models)))
    best, exact = mismatch(order)
    improved = True
    while improved and not exact:
        improved = False
        for i in range(len(order)):
            for j in range(len(order)):
                candidate = order[:i] + order[i + 1:]
                candidate.insert(j, order[i])
                error, matches = mismatch(candidate)
                if error < best - 1e-12:
                    order, best, exact, improved = candidate, error, matches, True
    if not exact:
        raise ValueError("no order of the models reproduces the published ranks: are these the published results?")
    return [models[i] for i in order] + [BASELINE]


def score(results: dict[str, pd.DataFrame], low_variance: set[str] | None = None,
          order: list[str] | None = None) -> pd.DataFrame:
    """Per-configuration scores: one row per (configuration, model) with the columns
    `config`, `series`, `model`, `part` ("scaled" or "unscaled"), `point` (scaled MASE or unscaled MAE),
    `crps` (scaled or not) and `rank`. `order` breaks rank ties (default: `model_order`).
    """
    naive_model = baseline(results)
    models = model_order(results) if order is None else list(order)
    if sorted(models) != sorted(results):
        raise ValueError(f"order must list each model once: got {models} for {sorted(results)}.")
    common = sorted(set.intersection(*(set(results[m].index) for m in models)))
    if not common:
        raise ValueError("The models share no configuration: evaluate them on the same series and terms.")
    low_variance = low_variance_series() if low_variance is None else low_variance
    series = pd.Series([key.split("/")[0] for key in common], index=common)
    naive = results[naive_model].loc[common]
    unscaled_series = set(low_variance) | set(series[naive[MASE] == 0])
    unscaled = series.isin(unscaled_series)

    parts = []
    for part, mask, point in (("scaled", ~unscaled, MASE), ("unscaled", unscaled, MAE)):
        keys = series.index[mask]
        if len(keys) == 0:
            continue
        filled = {m: _fill_invalid(m, part, results[m].loc[keys, [point, CRPS]].astype(float)) for m in models}
        if part == "scaled":
            filled = {m: filled[m] / filled[naive_model] for m in models}
        crps = pd.DataFrame({m: filled[m][CRPS] for m in models})
        ranks = crps.rank(axis=1, method="first")  # ties: the model in the earlier column wins
        for m in models:
            parts.append(pd.DataFrame({"config": keys, "series": series[keys].to_numpy(), "model": m,
                                       "part": part, "point": filled[m][point].to_numpy(),
                                       "crps": filled[m][CRPS].to_numpy(), "rank": ranks[m].to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def _aggregate(scores: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    return scores.groupby(by, sort=False).agg(point=("point", shifted_gmean), crps=("crps", shifted_gmean),
                                              rank=("rank", "mean"), count=("config", "size"))


def leaderboard(scores: pd.DataFrame) -> pd.DataFrame:
    """The published table: per model, shifted geometric means and mean rank of both parts, best first.

    Column names follow `boom_leaderboard.csv`, e.g. `MASE-6750-scaled` and `CRPS-663-unscaled`.
    """
    columns = []
    for part, point_name in (("scaled", "MASE"), ("unscaled", MAE)):
        agg = _aggregate(scores[scores["part"] == part], ["model"])
        if agg.empty:
            continue
        n = int(agg["count"].iloc[0])
        names = {"point": f"{point_name}-{n}-{part}", "crps": f"CRPS-{n}-{part}", "rank": f"Rank-{n}-{part}"}
        columns.append(agg[list(names)].rename(columns=names))
    table = pd.concat(columns, axis=1)
    table.index.name = "model"
    return table.sort_values(table.columns[2])


def breakdown(scores: pd.DataFrame, by: str, properties: dict[str, dict] | None = None) -> pd.DataFrame:
    """Scaled CRPS (shifted geometric mean) of each model per domain, frequency label, term, series type or series.

    A series with several domains counts in each. Rows are models (best overall first), columns the groups.
    """
    if by not in GROUPINGS:
        raise ValueError(f"Unknown breakdown {by!r}: choose from {GROUPINGS}.")
    properties = load_properties() if properties is None else properties
    scaled = scores[scores["part"] == "scaled"].copy()
    if by == "term":
        scaled[by] = scaled["config"].str.split("/").str[-1]
    elif by == "series":
        scaled[by] = scaled["series"]
    else:
        missing = sorted(set(scaled["series"]) - set(properties))
        if missing:
            raise ValueError(f"No properties for series {missing[:5]}...: pass the benchmark's properties.")
        scaled[by] = scaled["series"].map(lambda name: properties[name][by])
        scaled = scaled.explode(by)
    table = _aggregate(scaled, ["model", by])["crps"].unstack(by)
    columns = [t.value for t in Term if t.value in table.columns] if by == "term" else sorted(table.columns)
    order = _aggregate(scaled.drop_duplicates(["config", "model"]), ["model"])["rank"].sort_values().index
    return table.loc[order, columns]


def format_number(value: object) -> object:
    """The publication's display format: three decimals, scientific notation from 100 up."""
    if isinstance(value, (int, float, np.floating)):
        return f"{value:.1e}" if abs(value) >= 100 else f"{value:.3f}"
    return value


def plot(table: pd.DataFrame, path: str | Path) -> Path:
    """Bar charts of the scaled CRPS, MASE and mean rank per model (best at the top) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scaled = [c for c in table.columns if c.endswith("-scaled")]
    fig, axes = plt.subplots(1, len(scaled), figsize=(4.5 * len(scaled), 0.35 * len(table) + 1.5), sharey=True)
    axes = np.atleast_1d(axes)
    for ax, column in zip(axes, scaled):
        values = table[column].iloc[::-1]
        bars = ax.barh(values.index, values.to_numpy(), color="tab:blue")
        naive = set(seasonal_naives(values.index))
        for bar, model in zip(bars, values.index):
            if model in naive:
                bar.set_color("tab:gray")
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
        ax.set_title(column + (" (lower is better)"))
        ax.margins(x=0.15)
    fig.suptitle("BOOM leaderboard (scaled by seasonal naive)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
