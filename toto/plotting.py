"""Draw a forecast after its history: a panel per (series, variate), a median line, shaded quantile bands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the object API needs no GUI backend, so this works on servers too

from toto.api import Panel, quantile_columns


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
    columns = 1 if len(shown) <= 3 else 2
    rows = -(-len(shown) // columns)
    figure = Figure(figsize=(7 * columns, 2.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
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
        ax.tick_params(axis="x", labelrotation=20)
        ax.grid(alpha=0.3)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    axes[0].legend(loc="upper left", fontsize="small")
    if len(panels) > len(shown):
        figure.suptitle(f"first {len(shown)} of {len(panels)} series-variates")
    figure.savefig(path, dpi=100)
    return len(shown)
