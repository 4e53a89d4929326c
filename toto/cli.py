"""The `toto` command. `toto forecast INPUT` forecasts every series of a CSV or Parquet file.

A thin layer over `toto.api`: it reads the file, calls `forecast_panel`, writes the table and the plot, and prints a
short summary (to stderr, so that the forecast itself can go to stdout). Subcommands leave room for more verbs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from toto import api
from toto.model.toto import Toto
from toto.io import read_table, write_table


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except api.InputError as error:
        parser.exit(2, f"toto {args.command_name}: error: {error}\n")


def forecast(args: argparse.Namespace) -> int:
    """Run `toto forecast`: read, forecast, write, plot, summarise."""
    started = time.perf_counter()
    panel = api.to_panel(read_table(args.input), args.timestamp_column, args.id_column, args.target_columns, args.freq)
    model = _load_model(args.checkpoint, args.device)
    table = api.forecast_panel(
        panel,
        args.prediction_length,
        model,
        quantiles=args.quantiles,
        num_samples=args.num_samples,
        context_length=args.context_length,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
    )
    if args.output:
        write_table(table, args.output)
    else:
        table.to_csv(sys.stdout, index=False)
    if args.plot:
        from toto.plotting import plot_forecast  # matplotlib is only imported when a plot is asked for

        plot_forecast(panel, table, args.plot)
    print(_summary(args, panel, model, table, time.perf_counter() - started), file=sys.stderr)
    return 0


def _load_model(checkpoint: str, device: str | None) -> Toto:
    try:
        return api.load_model(checkpoint, device)
    except (OSError, ValueError) as error:  # a missing folder, an unreachable hub, a malformed config.json
        raise api.InputError(
            f"cannot load the checkpoint {checkpoint!r} ({error}); give a local folder holding config.json and "
            "model.safetensors, a Hugging Face hub id, or leave --checkpoint out for the embedded toto-tiny"
        ) from error


def _summary(
    args: argparse.Namespace, panel: api.Panel, model: Toto, table: pd.DataFrame, seconds: float
) -> str:
    """A few lines a person reads after a run: which model, what was read, what was forecast, where it went."""
    first = panel.series[0]
    steps = sum(len(s.index) for s in panel.series)
    missing = sum(int(np.isnan(s.values).sum()) for s in panel.series)
    parameters = sum(p.numel() for p in model.parameters())
    future = first.future_index(args.prediction_length)
    lines = [
        f"model     {args.checkpoint} ({parameters / 1e6:.2f}M parameters) on {next(model.parameters()).device}",
        *[f"          WARNING: {warning}" for warning in _model_warnings(args.checkpoint)],
        f"input     {args.input}: {panel.form} table, {len(panel.series)} series x {len(first.variates)} variate(s),"
        f" {steps} steps every {first.index.freqstr}, {missing} missing values filled as NaN",
        f"forecast  {args.prediction_length} steps per series from {future[0]} (first series), "
        f"{args.num_samples} sample paths, {len(args.quantiles)} quantiles, {seconds:.1f} s",
    ]
    levels = api.quantile_columns(table)
    for series in panel.series[:3]:
        for v, variate in enumerate(series.variates[:3]):
            rows = table[table["variate"] == variate]
            if panel.id_column:
                rows = rows[rows[panel.id_column] == series.id]
            end = rows.iloc[-1]
            name = variate if series.id is None else f"{series.id}/{variate}"
            lines.append(
                f"  {name}: median {end['median']:.4g} at {end[panel.timestamp_column]}"
                f" ({float(levels[0]):.0%}-{float(levels[-1]):.0%}: {end[levels[0]]:.4g} to {end[levels[-1]]:.4g})"
            )
    written = [f"{args.output} ({len(table)} rows)" if args.output else None, args.plot]
    if any(written):
        lines.append("wrote     " + ", ".join(w for w in written if w))
    return "\n".join(lines)


def _model_warnings(checkpoint: str) -> list[str]:
    return []


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.1,0.5,0.9, got {text!r}") from error


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toto", description="Toto time-series foundation model.")
    commands = parser.add_subparsers(title="commands", required=True)
    sub = commands.add_parser(
        "forecast",
        help="forecast every series of a CSV or Parquet file",
        description="Forecast every series of a CSV or Parquet file, wide (timestamp + one column per variate) "
        "or long (timestamp + id + value columns). Missing values and gaps in the time grid are allowed.",
    )
    sub.set_defaults(command=forecast, command_name="forecast")
    sub.add_argument("input", type=Path, help="CSV, TSV or Parquet file")
    sub.add_argument("-p", "--prediction-length", type=int, required=True, help="steps to forecast")
    sub.add_argument(
        "-q", "--quantiles", type=_floats, default=list(api.DEFAULT_QUANTILES),
        help="comma-separated quantile levels (default: 0.1,...,0.9)",
    )
    sub.add_argument("-n", "--num-samples", type=int, default=256, help="sample paths (default: 256)")
    sub.add_argument(
        "-c", "--checkpoint", default="toto-tiny",
        help="model: the embedded toto-tiny (default), a local folder or a Hugging Face hub id",
    )
    sub.add_argument("-o", "--output", type=Path, help="forecast table, .csv or .parquet (default: CSV to stdout)")
    sub.add_argument("--plot", type=Path, help="PNG of history, median and quantile bands per variate")
    sub.add_argument("--timestamp-column", help="name of the timestamp column (default: detected)")
    sub.add_argument("--id-column", help="name of the series id column of a long table (default: detected)")
    sub.add_argument("--target-columns", type=_names, help="comma-separated columns to forecast (default: all numeric)")
    sub.add_argument("--freq", help="pandas frequency such as 5min, h, D, MS (default: inferred)")
    sub.add_argument(
        "--context-length", type=int, default=api.DEFAULT_CONTEXT_LENGTH,
        help=f"most recent steps the model sees (default: {api.DEFAULT_CONTEXT_LENGTH})",
    )
    sub.add_argument("--batch-size", type=int, default=16, help="series forecast together (default: 16)")
    sub.add_argument("--seed", type=int, default=0, help="random seed of the sample paths (default: 0)")
    sub.add_argument("--device", help="torch device such as cpu or cuda (default: cuda when available)")
    return parser


if __name__ == "__main__":
    sys.exit(main())
