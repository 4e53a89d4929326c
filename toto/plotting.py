"""Draw results people would rather look at than read: a forecast after its history (a panel per series and variate,
a median line, shaded quantile bands), and a detection (the series, its predictive band and the flagged values)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API needs no GUI backend, so this works on servers too

from toto.api import Panel, quantile_columns
from toto.tables import Placement


def plot_forecast(
    panel: Panel,
    forecast: pd.DataFrame,
    path: str | Path,
    history_length: int | None = None,
    max_panels: int = 12,
) -> int:
    """Save a PNG of the last `history_length` observed steps (default: four horizons, at least 96) and the
    forecast of the first `max_panels` variates; returns how many panels were drawn.

    Each pair of quantile levels (q, 1 - q) in the forecast becomes a band, so the default nine levels give
    four nested bands whose shade deepens toward the median.
    """
    levels = quantile_columns(forecast)
    pairs = [
        (lo, hi) for lo in levels for hi in levels if float(lo) < 0.5 and np.isclose(float(lo) + float(hi), 1)
    ]
    forecast_variates = set(forecast["variate"])  # covariates are inputs only: they have no forecast to draw
    panels = [(s, i) for s in panel.series for i, name in enumerate(s.variates) if name in forecast_variates]
    shown = panels[:max_panels]
    figure, axes = _panel_grid(len(shown), width=7)
    for ax, (series, v) in zip(axes, shown, strict=False):
        future = forecast[forecast["variate"] == series.variates[v]]
        if panel.id_column:
            future = future[future[panel.id_column] == series.id]
        horizon = len(future)
        keep = history_length or max(4 * horizon, 96)
        ax.plot(series.index[-keep:], series.values[v, -keep:], color="black", linewidth=1, label="history")
        times = future[panel.timestamp_column]
        for lo, hi in pairs:
            label = f"{float(lo):.0%}-{float(hi):.0%}" if (lo, hi) == pairs[0] else None
            ax.fill_between(
                times, future[lo], future[hi], color="tab:blue", alpha=0.15, linewidth=0, label=label
            )
        ax.plot(times, future["median"], color="tab:blue", linewidth=1.5, label="median")
        ax.set_title(series.variates[v] if series.id is None else f"{series.id} - {series.variates[v]}")
    return _save(figure, axes, len(shown), len(panels), path)


def plot_detection(scored: pd.DataFrame, placement: Placement, path: str | Path, max_panels: int = 12) -> int:
    """Save a PNG of each (series, variate) of a detection (`ForecastPipeline.detect_table`): the values in time
    order, the predictive band around them and the values flagged as anomalies; returns how many panels were drawn.
    """
    columns = placement.columns
    variates = list(columns.values.columns)
    panels = [(placed, v) for placed in placement.series for v in range(len(variates))]
    shown = panels[:max_panels]
    figure, axes = _panel_grid(len(shown), width=9)
    single = len(variates) == 1
    for ax, (placed, v) in zip(axes, shown, strict=False):
        name = variates[v]
        prefix = "" if single else f"{name}_"
        frame = scored.iloc[placed.rows]
        times = columns.timestamps[placed.rows]
        ax.fill_between(times, frame[f"{prefix}lower"], frame[f"{prefix}upper"], color="tab:blue", alpha=0.2,
                        linewidth=0, label="band")
        ax.plot(times, frame[name], color="black", linewidth=0.8, label=name)
        flagged = frame[f"{prefix}is_anomaly"].to_numpy(dtype=bool)
        ax.scatter(times[flagged], frame[name][flagged], color="tab:red", s=14, zorder=3, label="anomaly")
        series_id = placed.grid.id
        ax.set_title(name if series_id is None else f"{series_id} - {name}")
    return _save(figure, axes, len(shown), len(panels), path)


def _panel_grid(count: int, width: float) -> tuple[Figure, np.ndarray]:
    """A figure of `count` panels, one column up to three of them, two beyond; `width` inches a column."""
    columns = 1 if count <= 3 else 2
    rows = -(-count // columns)
    figure = Figure(figsize=(width * columns, 2.8 * rows), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False).ravel()


def _save(figure: Figure, axes: np.ndarray, shown: int, total: int, path: str | Path) -> int:
    """Finish the `shown` panels of `total` (dates slanted, a light grid, spare panels hidden, the legend once) and
    save the figure; returns `shown`."""
    for ax in axes[:shown]:
        ax.tick_params(axis="x", labelrotation=20)
        ax.grid(alpha=0.3)
    for ax in axes[shown:]:
        ax.set_visible(False)
    axes[0].legend(loc="upper left", fontsize="small")
    if total > shown:
        figure.suptitle(f"first {shown} of {total} series-variates")
    figure.savefig(path, dpi=100)
    return shown
