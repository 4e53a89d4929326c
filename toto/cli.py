"""The `toto` command. `toto forecast INPUT` forecasts every series of a CSV or Parquet file.

A thin layer over `toto.api`: it reads the file, calls `forecast_panel`, writes the table and the plot, and
prints a short summary (to stderr, so that the forecast itself can go to stdout). Subcommands leave room for
more verbs.

It never destroys what a user wrote: `--output` and `--plot` may not name an input file (under any spelling of
its path), and every path (its type, and a write probe that touches no existing file), the device, the settings
and the forecast's memory are checked before the model runs, so a mistake costs a one-line error (exit status 2)
rather than a traceback after minutes of work.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from toto import api, checkpoint_io
from toto.inference.memory import DEFAULT_MEMORY_BUDGET_BYTES, MemoryBudgetExceeded
from toto.io import check_output_type, read_table, write_table
from toto.options import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_MAX_SERIES,
    DEFAULT_MODEL,
    DEFAULT_NUM_SAMPLES,
    DEFAULT_QUANTILE_LEVELS,
    FEEDBACK,
    Feedback,
)
from toto.pipeline import ForecastPipeline
from toto.validation import check_seed

if TYPE_CHECKING:
    from toto.anomaly.detector import DetectionSettings
    from toto.tables import Placement

SUMMARY_LINES = 5  # series-variates whose end-of-horizon forecast the summary prints
# Decoding is autoregressive, one patch at a time: time and memory grow with the horizon. Longer horizons are
# refused (docs/cli.md), and from LONG_HORIZON on the command says it will take a while.
MAX_PREDICTION_LENGTH = 8192
LONG_HORIZON = 1024
DEVICE_TYPES = ("cpu", "cuda", "mps")
# The flags of the large-panel mode (toto.batch), which only --output-dir turns on.
LARGE_PANEL_FLAGS = ("--devices", "--accelerator", "--series-per-part")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except api.InputError as error:
        parser.exit(2, f"toto {args.command_name}: error: {error}\n")


def forecast(args: argparse.Namespace) -> int:
    """Run `toto forecast`: check, read, forecast, write, plot, summarise."""
    _check_horizon(args.prediction_length)
    check_seed(args.seed)
    _check_device(args.device)
    if args.output_dir:
        return _forecast_in_parts(args)
    for flag in LARGE_PANEL_FLAGS:
        if getattr(args, flag[2:].replace("-", "_")) is not None:
            raise api.InputError(f"{flag} applies to the large-panel mode: add --output-dir DIR (part files, see"
                                 " docs/cli.md), or leave it out")
    _check_outputs(args)
    table, freq = _read_source(args)
    panel = api.to_panel(
        table, args.timestamp_column, args.id_column,
        api.columns_to_read(args.target_columns, args.exogenous_columns or ()), freq,
    )
    model = _load_model(args.checkpoint, args.device, args.feedback)
    _check_memory(args, model, min(args.batch_size, len(panel.series)), max(len(s.variates) for s in panel.series),
                  max(len(s.index) for s in panel.series))
    future = _future_panel(args, panel)
    if args.prediction_length >= LONG_HORIZON:
        print(f"toto forecast: {len(panel.series)} series x {args.prediction_length} steps, decoded one patch at a"
              " time: this takes a while (minutes on a CPU)", file=sys.stderr)
    started = time.perf_counter()
    table = model.predict_panel(
        panel,
        args.prediction_length,
        quantiles=args.quantiles,
        num_samples=args.num_samples,
        context_length=args.context_length,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=True,
        exogenous_columns=args.exogenous_columns or (),
        future=future,
    )
    seconds = time.perf_counter() - started
    _write(args, table, lambda plotting: plotting.plot_forecast(panel, table, args.plot))
    print(_summary(args, panel, model, table, seconds), file=sys.stderr)
    return 0


def _read_source(args: argparse.Namespace) -> tuple[pd.DataFrame, str | None]:
    """The table to read, from the input file or from Prometheus (--prometheus), and its frequency (--freq, or the
    query's step)."""
    if args.prometheus is None:
        if args.input is None:
            raise api.InputError("give an input file, or read from Prometheus with --prometheus URL --query PROMQL")
        if args.query is not None:
            raise api.InputError("--query reads from Prometheus: give --prometheus URL as well, or leave out --query")
        return read_table(args.input), args.freq
    if args.input is not None:
        raise api.InputError(f"give either an input file ({args.input}) or --prometheus, not both")
    if args.query is None:
        raise api.InputError("--prometheus needs --query PROMQL, e.g. --query 'rate(http_requests_total[5m])'")
    if args.freq is not None:
        raise api.InputError("--freq does not apply to --prometheus: the query's --step is the frequency")
    from toto.extras import require_extra

    require_extra("prometheus", f"toto {args.command_name} --prometheus")
    from toto.prometheus import client, reading

    step = client.parse_duration(args.step, "--step")
    start, end = reading.aligned_range(client.parse_duration(args.range, "--range"), step)
    connection = client.Connection(args.prometheus, ca_file=args.prometheus_ca_file)
    try:
        with client.PrometheusClient(connection) as prometheus:
            series = reading.read_series(prometheus, args.query, start, end, step, args.max_series)
    except client.PrometheusUnavailable as error:
        raise api.InputError(f"{error}; check the URL and that the server is up") from error
    counters = reading.counter_like(series)
    if counters:
        print(f"toto {args.command_name}: warning: {', '.join(counters)} look(s) like raw counters, which only grow"
              " and reset on restarts: forecast their rate instead, e.g. rate(name[5m])", file=sys.stderr)
    table = reading.to_table(series, start, end, step)
    if table.empty:
        raise api.InputError(f"the query {args.query!r} returned no samples over the last {args.range}: check it in"
                             " Prometheus' expression browser")
    return table, f"{round(step)}s"


def _source_name(args: argparse.Namespace) -> str:
    if args.prometheus is None:
        return str(args.input)
    return f"{args.query} from {args.prometheus} (last {args.range} every {args.step})"


def _write(args: argparse.Namespace, table: pd.DataFrame, plot: Callable[[ModuleType], object]) -> None:
    """Write `table` to --output (CSV to stdout without one) and, with --plot, the plot `plot` draws with
    `toto.plotting` (matplotlib is imported only then); a write that fails is a one-line error."""
    with _reported_write_errors():
        if args.output:
            write_table(table, args.output)
        else:
            table.to_csv(sys.stdout, index=False)
        if args.plot:
            import toto.plotting

            plot(toto.plotting)


def detect(args: argparse.Namespace) -> int:
    """Run `toto detect`: check, read, score every row, write, plot, summarise."""
    from toto.anomaly.calibration import Calibration  # scipy: imported when a detection is asked for
    from toto.anomaly.detector import DetectionSettings

    _check_device(args.device)
    _check_outputs(args)
    settings = DetectionSettings(steps_ahead=args.steps_ahead, window=args.window, band_level=args.band_level,
                                 false_alarm_rate=args.false_alarm_rate, alerts_per_day=args.alerts_per_day,
                                 calibration=Calibration(window=args.calibration_window))
    table, freq = _read_source(args)
    model = _load_model(args.checkpoint, args.device, None)
    started = time.perf_counter()
    scored, placement = model.detect_table(table, args.timestamp_column, args.id_column, args.target_columns,
                                           freq, settings, progress=True)
    seconds = time.perf_counter() - started
    _write(args, scored, lambda plotting: plotting.plot_detection(scored, placement, args.plot))
    print(_detection_summary(args, model, scored, placement, settings, seconds), file=sys.stderr)
    return 0


def exporter(args: argparse.Namespace) -> int:
    """Run `toto exporter`: validate the config, load the model, serve /metrics and run the rules on schedule until
    stopped (SIGINT or SIGTERM); with --once, run every rule once and print what /metrics would serve."""
    import logging
    import signal
    import threading

    from toto.extras import require_extra

    require_extra("prometheus", "toto exporter")
    from prometheus_client import generate_latest

    from toto.prometheus.config import load_config
    from toto.prometheus.exporter import Exporter

    config = load_config(args.config)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    model = _load_model(config.model.checkpoint, config.model.device, None)
    exporter = Exporter(config, model)
    if args.once:
        exporter.run_all()
        sys.stdout.write(generate_latest(exporter.registry).decode())
        return 0
    try:
        server, _ = exporter.serve()
    except OSError as error:
        raise api.InputError(f"cannot listen on {config.listen.address}:{config.listen.port} ({error.strerror}):"
                             " choose another listen.port") from error
    logging.getLogger("toto.exporter").info("serving http://%s:%d/metrics, %d rule(s)", config.listen.address,
                                            server.server_port, len(config.rules))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        exporter.run_forever(stop)
    finally:
        server.shutdown()
        exporter.close()
    return 0


def _detection_summary(args: argparse.Namespace, model: ForecastPipeline, scored: pd.DataFrame,
                       placement: Placement, settings: DetectionSettings, seconds: float) -> str:
    """The lines a person reads after `toto detect`: the model, what was read and placed, what was flagged."""
    scores = scored["anomaly_score"].to_numpy(dtype=float)
    flagged = scored["is_anomaly"].to_numpy(dtype=bool)
    budget = (f"false-alarm rate {settings.false_alarm_rate:g}" if settings.false_alarm_rate is not None
              else f"{settings.alerts_per_day:g} alert(s) per day")
    lines = [
        f"model     {args.checkpoint} ({model.family}) on {model.device}",
        f"input     {_source_name(args)}: {placement.summary()}",
        f"scored    {int(np.isfinite(scores).sum()):,} of {len(scored):,} rows in {seconds:.1f} s;"
        f" {int(flagged.sum()):,} flagged at {budget}",
    ]
    timestamp = placement.columns.timestamp_column
    for row in np.argsort(-np.nan_to_num(scores, nan=-1.0))[:SUMMARY_LINES]:
        if flagged[row]:
            lines.append(f"  {scored[timestamp].iloc[row]}: anomaly_score {scores[row]:.6f}")
    written = [f"{args.output} ({len(scored)} rows)"] if args.output else []
    written += [str(args.plot)] if args.plot else []
    if written:
        lines.append("wrote     " + ", ".join(written))
    return "\n".join(lines)


def _check_horizon(prediction_length: int) -> None:
    if prediction_length > MAX_PREDICTION_LENGTH:
        raise api.InputError(
            f"--prediction-length {prediction_length} is over the ceiling of {MAX_PREDICTION_LENGTH} steps: decoding"
            " is autoregressive, so time and memory grow with the horizon; forecast a coarser frequency (resample"
            " the input) or a shorter horizon"
        )


def _check_memory(args: argparse.Namespace, model: ForecastPipeline, series: int, variates: int, steps: int) -> None:
    """Refuse, before any work, a forecast whose largest batch (`series` series of `variates` variates, the longest
    `steps` long) cannot fit the forecaster's memory budget or the memory this machine has available
    (`ForecastPipeline.plan`): a one-line error naming the estimate instead of a failure minutes later, or the
    system killing the process."""
    context = min(args.context_length or model.context_length, steps)
    what = (f"{series} series x {variates} variate(s) x {args.prediction_length} steps"
            f" ({model.describe(args.num_samples, args.context_length)})")
    try:
        plan = model.plan(series, variates, context, args.prediction_length, args.num_samples, len(args.quantiles),
                          DEFAULT_MEMORY_BUDGET_BYTES)
    except MemoryBudgetExceeded as error:
        raise api.InputError(
            f"{what} need at least {error.needed_bytes / 2**30:,.1f} GiB of working memory, over the forecaster's"
            f" budget of {error.budget_bytes / 2**30:,.1f} GiB: lower --num-samples, --batch-size or"
            " --prediction-length"
        ) from error
    available = checkpoint_io.available_memory_bytes()
    if available is not None and plan.peak_bytes > available / 2:
        raise api.InputError(
            f"{what} need about {plan.peak_bytes / 2**30:.1f} GiB of working memory, more than half of the"
            f" {available / 2**30:.1f} GiB available: lower --num-samples, --batch-size or --prediction-length"
        )


def _check_device(name: str | None) -> None:
    """A device this machine has, named as torch names it; anything else is a one-line error."""
    if name is None:
        return
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in DEVICE_TYPES:
        raise api.InputError(f"--device {name!r} is not a device: use cpu, cuda, cuda:N or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise api.InputError(f"--device {name}: this machine has no CUDA GPU that torch can use; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise api.InputError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise api.InputError(f"--device {name}: MPS is not available on this machine; use --device cpu")


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse outputs that would overwrite an input (whatever the spelling of the path), of a type that cannot be
    written, or where nothing can be written."""
    inputs = [path for path in (args.input, getattr(args, "future", None)) if path is not None]
    outputs = [(flag, path) for flag, path in (("--output", args.output), ("--plot", args.plot)) if path is not None]
    for flag, path in outputs:
        for source in inputs:
            if _same_file(path, source):
                raise api.InputError(
                    f"{flag} {path} is the input file {source}: writing there would destroy it; choose another path"
                )
        _check_writable(flag, path, check_output_type if flag == "--output" else _check_plot_type)
    if len(outputs) == 2 and _same_file(outputs[0][1], outputs[1][1]):
        raise api.InputError(f"--output and --plot are the same file {args.output}: give them different paths")


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same resolved path (symlinks, '..', './'), or the same inode."""
    if a.expanduser().resolve() == b.expanduser().resolve():
        return True
    try:
        return os.path.samefile(a, b)  # hard links, case-insensitive file systems
    except OSError:  # one of them does not exist (yet)
        return False


def _check_plot_type(path: Path) -> None:
    """A plot file matplotlib can write: its format is the extension (PNG without one)."""
    from matplotlib.backend_bases import FigureCanvasBase

    formats = FigureCanvasBase.get_supported_filetypes()
    extension = path.suffix.lstrip(".").lower()
    if extension and extension not in formats:
        raise api.InputError(f"--plot format {extension!r} is not supported: use .png (or"
                             f" {', '.join(sorted(formats))})")


def _check_writable(flag: str, path: Path, check_type: Callable[[Path], object]) -> None:
    """Refuse a path where the output cannot be written: a folder, a type `check_type` refuses, or a place that
    refuses a write. The probe touches nothing a user wrote: an existing file is opened for writing but not written
    (nor truncated); a new one's folder gets a probe file of its own, written and removed. Devices and pipes
    (/dev/full, a FIFO) are refused: only a write can tell whether they take the output, and that write would go
    to whatever reads them."""
    path = path.expanduser()
    if path.is_dir():
        raise api.InputError(f"{flag} {path} is a folder: give a file name, e.g. {path / 'forecast.csv'}")
    check_type(path)
    if path.exists():
        if not path.is_file():
            raise api.InputError(f"{flag} {path} is not a regular file (a device or a pipe): give a file path")
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as error:
            raise api.InputError(f"{flag} {path}: the file is not writable ({error.strerror}); choose another path or"
                                 " fix its permissions") from error
        return
    _probe_folder(flag, path, path.absolute().parent)


def _probe_folder(flag: str, path: Path, folder: Path) -> None:
    """Write one byte to a new file in `folder`, or in its nearest existing parent (outputs create the missing
    ones), flush it to the disk and remove it; a folder that refuses it is a one-line error naming `flag` `path`."""
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise api.InputError(f"{flag} {path}: cannot write in {folder}, which is not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".toto-write-probe-") as probe:
            probe.write(b"\0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as error:
        raise api.InputError(f"{flag} {path}: cannot write in {folder} ({error.strerror}); choose another path or fix"
                             " its permissions") from error


@contextlib.contextmanager
def _reported_write_errors() -> Iterator[None]:
    """Turn an OSError while writing (disk full, a folder removed meanwhile) into a one-line InputError."""
    try:
        yield
    except OSError as error:
        raise api.InputError(f"cannot write {error.filename or 'the output'}: {error.strerror or error}") from error


def _forecast_in_parts(args: argparse.Namespace) -> int:
    """`--output-dir`: stream a large long table and forecast it over `--devices` processes, part by part.

    Everything that can go wrong before the forecast is checked here, in the parent process, before any rank
    starts: the flags, the folder, the file's layout and first series, the checkpoint, and the memory of the
    largest batch of a part."""
    from toto.batch import BatchJob, forecast_files, survey

    if args.output or args.plot or args.exogenous_columns or args.future:
        raise api.InputError("--output-dir writes part files: leave out --output, --plot, --exogenous-columns and"
                             " --future")
    if args.input is None or args.prometheus is not None:
        raise api.InputError("--output-dir forecasts a long table read from a file: give an input file, not"
                             " --prometheus")
    if args.device is not None:
        raise api.InputError("--output-dir runs its processes on --accelerator (cpu, cuda or auto) and --devices:"
                             " leave out --device")
    devices, series_per_part = (_positive(flag, value, default) for flag, value, default in (
        ("--devices", args.devices, 1), ("--series-per-part", args.series_per_part, BatchJob.series_per_part)))
    output_dir = args.output_dir.expanduser()
    if output_dir.exists() and not output_dir.is_dir():
        raise api.InputError(f"--output-dir {args.output_dir} is not a folder: give a folder for the part files")
    _probe_folder("--output-dir", args.output_dir, output_dir.absolute())
    options = {"quantiles": args.quantiles, "num_samples": args.num_samples, "context_length": args.context_length,
               "batch_size": args.batch_size, "seed": args.seed}
    job = BatchJob(input_path=args.input, output_dir=args.output_dir, prediction_length=args.prediction_length,
                   checkpoint=args.checkpoint, feedback=args.feedback, id_column=args.id_column or "id",
                   timestamp_column=args.timestamp_column,
                   target_columns=args.target_columns, freq=args.freq, series_per_part=series_per_part,
                   forecast_options=options)
    shape = survey(job)
    model = _load_model(args.checkpoint, "cpu", args.feedback)  # only to check and plan: every rank loads its own
    _check_memory(args, model, min(args.batch_size, series_per_part, shape.series), shape.variates, shape.steps)
    del model
    started = time.perf_counter()
    parts = forecast_files(job, devices=devices, accelerator=args.accelerator or "cpu", surveyed=shape)
    print(f"wrote     {len(parts)} part files to {args.output_dir} in {time.perf_counter() - started:.1f} s"
          " (read them with toto.batch.read_parts)", file=sys.stderr)
    return 0


def _future_panel(args: argparse.Namespace, panel: api.Panel) -> api.Panel | None:
    """The covariates' values over the horizon (--future FILE), read by the same rules as the input."""
    if not args.exogenous_columns:
        if args.future:
            raise api.InputError("--future gives covariate values: name their columns with --exogenous-columns")
        return None
    if not args.future:
        raise api.InputError(
            f"--exogenous-columns {','.join(args.exogenous_columns)} need --future FILE: a table of the same layout"
            " holding those columns at the next --prediction-length timestamps of every series"
        )
    return api.to_panel(read_table(args.future), panel.timestamp_column, panel.id_column, args.exogenous_columns,
                        args.freq or panel.series[0].index.freqstr)


def _positive(flag: str, value: int | None, default: int) -> int:
    """A count flag's value (`default` when left out): a positive integer, else a one-line error."""
    if value is None:
        return default
    if value < 1:
        raise api.InputError(f"{flag} must be a positive integer, got {value}")
    return value


def _load_model(name: str, device: str | None, feedback: Feedback | None) -> ForecastPipeline:
    try:
        pipeline = api.load_model(name, device)
    except (OSError, ValueError) as error:  # a missing folder, an unreachable hub, a malformed config.json
        # The error names the file at fault and what to pass instead (toto.checkpoint_io): said once, here.
        raise api.InputError(f"cannot load the checkpoint {name!r}: {error}") from error
    if feedback is not None:
        try:
            pipeline.feedback = feedback
        except ValueError as error:  # a quantile model: the pipeline's rule, in its words
            raise api.InputError(f"--feedback {feedback}: {error}") from error
    return pipeline


def _summary(
    args: argparse.Namespace, panel: api.Panel, model: ForecastPipeline, table: pd.DataFrame, seconds: float
) -> str:
    """The lines a person reads after a run: which model, what was read, what was forecast, where it went."""
    first = panel.series[0]
    lengths = sorted(len(s.index) for s in panel.series)
    steps = f"{lengths[0]}" if lengths[0] == lengths[-1] else f"{lengths[0]} to {lengths[-1]}"
    missing = sum(int(np.isnan(s.values).sum()) for s in panel.series)
    parameters = sum(p.numel() for p in model.model.parameters())
    future = first.future_index(args.prediction_length)
    embedded = "embedded, " if str(args.checkpoint) in checkpoint_io.embedded_models() else ""
    lines = [
        f"model     {args.checkpoint} ({embedded}{model.family}, {parameters / 1e6:.2f}M parameters) on {model.device}",
        (
            f"input     {_source_name(args)}: {panel.form} table, {len(panel.series)} series x"
            f" {len(first.variates)} variate(s) ({', '.join(first.variates)}), {steps} steps every"
            f" {first.index.freqstr}, {missing or 'no'} missing values"
        ),
        (
            f"forecast  {args.prediction_length} steps, {future[0]} to {future[-1]}"
            f"{' for the first series' if len(panel.series) > 1 else ''},"
            f" {model.describe(args.num_samples, args.context_length)},"
            f" {seconds:.1f} s"
        ),
    ]
    note = _random_weights_note(args.checkpoint)
    if note:
        lines[1:1] = [
            f"          WARNING: random weights ({note})",
            "          the forecast shows the pipeline working, not what a trained Toto predicts",
        ]
    levels = api.quantile_columns(table)
    exogenous = set(args.exogenous_columns or ())
    shown = [(series, v) for series in panel.series for v in series.variates if v not in exogenous]
    for series, variate in shown[:SUMMARY_LINES]:
        rows = table[table["variate"] == variate]
        if panel.id_column:
            rows = rows[rows[panel.id_column] == series.id]
        end = rows.iloc[-1]
        name = variate if series.id is None else f"{series.id}/{variate}"
        lines.append(
            f"  {name}: median {_number(end['median'])} at {end[panel.timestamp_column]}"
            f" ({float(levels[0]):.0%}-{float(levels[-1]):.0%}:"
            f" {_number(end[levels[0]])} to {_number(end[levels[-1]])})"
        )
    if len(shown) > SUMMARY_LINES:
        lines.append(f"  ... and {len(shown) - SUMMARY_LINES} more in the table")
    if panel.ignored:
        ignored = (f"ignored   column(s) {', '.join(sorted(panel.ignored))}: not numeric"
                   " (name targets: --target-columns)")
        lines.insert(next(i for i, line in enumerate(lines) if line.startswith("input")) + 1, ignored)
    written = [f"{args.output} ({len(table)} rows)"] if args.output else []
    written += [str(args.plot)] if args.plot else []
    if written:
        lines.append("wrote     " + ", ".join(written))
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.4g}"


def _random_weights_note(name: str) -> str | None:
    """The note of a checkpoint whose training_summary.json marks its weights as untrained ("random-init")."""
    try:
        summary = checkpoint_io.read_training_summary(checkpoint_io.resolve(name, local_files_only=True))
    except OSError:  # not a local folder or embedded name: nothing to warn about
        return None
    if summary.get("status") != "random-init":
        return None
    return summary.get("note", "the model is not trained yet")


def _floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 0.1,0.5,0.9, got {text!r}"
        ) from error


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toto", description="Toto time-series foundation model.")
    commands = parser.add_subparsers(title="commands", required=True)
    sub = commands.add_parser(
        "forecast",
        help="forecast every series of a CSV or Parquet file",
        description="Forecast every series of a CSV or Parquet file, wide (timestamp + one column per"
        " variate) or long (timestamp + id + value columns). Missing values and gaps in time are allowed.",
    )
    sub.set_defaults(command=forecast, command_name="forecast")
    sub.add_argument("input", type=Path, nargs="?", help="CSV, TSV or Parquet file (or read --prometheus)")
    _prometheus_arguments(sub)
    sub.add_argument(
        "-p", "--prediction-length", type=int, required=True, metavar="N",
        help=f"steps to forecast (at most {MAX_PREDICTION_LENGTH})"
    )
    sub.add_argument(
        "-q",
        "--quantiles",
        type=_floats,
        default=list(DEFAULT_QUANTILE_LEVELS),
        metavar="LEVELS",
        help="comma-separated quantile levels (default: 0.1,...,0.9)",
    )
    sub.add_argument(
        "-n", "--num-samples", type=int, metavar="N",
        help=f"sample paths of a sampling model, Toto 1.0 (default: {DEFAULT_NUM_SAMPLES}); Toto 2.0 takes none",
    )
    sub.add_argument(
        "-c",
        "--checkpoint",
        default=DEFAULT_MODEL,
        metavar="CHECKPOINT",
        help=f"model of either family, Toto 1.0 or 2.0: an embedded model (default: {DEFAULT_MODEL}), a local"
        " folder or a Hugging Face hub id (e.g. Datadog/Toto-2.0-22m)",
    )
    sub.add_argument(
        "--exogenous-columns",
        type=_names,
        metavar="NAMES",
        help="comma-separated known-future covariate columns of the input: not forecast, their future in --future",
    )
    sub.add_argument(
        "--future", type=Path, metavar="FILE",
        help="CSV or Parquet with the --exogenous-columns at the next --prediction-length timestamps",
    )
    sub.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="PATH",
        help="forecast table, .csv or .parquet (default: CSV to stdout)",
    )
    sub.add_argument(
        "--plot", type=Path, metavar="PNG", help="PNG of history, median and quantile bands per variate"
    )
    sub.add_argument(
        "--timestamp-column", metavar="NAME", help="name of the timestamp column (default: detected)"
    )
    sub.add_argument(
        "--id-column", metavar="NAME", help="name of the series id column of a long table (default: detected)"
    )
    sub.add_argument(
        "--target-columns",
        type=_names,
        metavar="NAMES",
        help="comma-separated columns to forecast (default: all numeric)",
    )
    sub.add_argument(
        "--freq", metavar="FREQ", help="pandas frequency such as 5min, h, D, MS (default: inferred)"
    )
    sub.add_argument(
        "--context-length",
        type=int,
        default=None,
        metavar="N",
        help="most recent steps the model sees, as one window (default: the default context its folder records, "
        f"else {DEFAULT_CONTEXT_LENGTH}; toto-tiny pools its sample paths from the last 128, 512 and 2048 steps)",
    )
    sub.add_argument(
        "--feedback", choices=FEEDBACK, default=None,
        help="what a sample path's next patch is decoded from (Toto 1.0): its own draws (sample, the default) or"
        " the mean forecast (mean: samples are each step's marginals, decoding is one path per series, and long"
        " horizons keep their cycles)",
    )
    sub.add_argument(
        "--batch-size", type=int, default=16, metavar="N", help="series forecast together (default: 16)"
    )
    sub.add_argument(
        "--seed", type=int, default=0, metavar="N", help="random seed of the sample paths (default: 0)"
    )
    batch = sub.add_argument_group("large panels (a long table streamed from disk, see toto.batch)")
    batch.add_argument("--output-dir", type=Path, metavar="DIR",
                       help="forecast part by part into DIR/part-r*.parquet; a rerun of the same command resumes"
                       " with the parts there (docs/cli.md, 'Large panels')")
    batch.add_argument("--devices", type=int, metavar="N", help="processes or devices, with --output-dir (default: 1)")
    batch.add_argument("--accelerator", choices=("cpu", "cuda", "gpu", "mps", "auto"),
                       help="what the processes run on, with --output-dir (default: cpu)")
    batch.add_argument("--series-per-part", type=int, metavar="N",
                       help="series per part file, with --output-dir (default: 256)")
    sub.add_argument(
        "--device", metavar="DEVICE", help="torch device such as cpu or cuda (default: cuda when available)"
    )
    _detect_parser(commands)
    sub = commands.add_parser(
        "exporter",
        help="forecast and score Prometheus queries on a schedule; serve the results on /metrics",
        description="Run the Prometheus exporter of a YAML config (examples/prometheus/exporter.yaml): every rule's"
        " query is read, scored and forecast on its schedule, and its band, medians and anomaly score are served"
        " on /metrics for Prometheus to scrape (docs/prometheus.md).",
    )
    sub.set_defaults(command=exporter, command_name="exporter")
    sub.add_argument("--config", type=Path, required=True, metavar="YAML", help="the exporter's config file")
    sub.add_argument("--once", action="store_true",
                     help="run every rule once, print what /metrics would serve, and exit (checks a config)")
    return parser


def _prometheus_arguments(sub: argparse.ArgumentParser) -> None:
    group = sub.add_argument_group(
        "reading from Prometheus (docs/prometheus.md; credentials from PROMETHEUS_BEARER_TOKEN, or PROMETHEUS_USERNAME"
        " and PROMETHEUS_PASSWORD)")
    group.add_argument("--prometheus", metavar="URL",
                       help="read the series of --query from this Prometheus-compatible server instead of a file")
    group.add_argument("--query", metavar="PROMQL",
                       help="PromQL expression; one series per label set (counters: query their rate())")
    group.add_argument("--range", default="7d", metavar="DURATION", help="history to read (default: 7d)")
    group.add_argument("--step", default="5m", metavar="DURATION", help="query step, the series' frequency"
                       " (default: 5m)")
    group.add_argument("--max-series", type=int, default=DEFAULT_MAX_SERIES, metavar="N",
                       help=f"refuse a query returning more series (default: {DEFAULT_MAX_SERIES:,})")
    group.add_argument("--prometheus-ca-file", metavar="PEM", help="CA bundle of a server with a private certificate")


def _detect_parser(commands: argparse._SubParsersAction) -> None:
    from toto.anomaly.calibration import Calibration
    from toto.anomaly.detector import DetectionSettings

    defaults = DetectionSettings()
    sub = commands.add_parser(
        "detect",
        help="score every row of a CSV or Parquet file by how anomalous it is",
        description="Score every row of a CSV or Parquet file, wide (timestamp + one column per variate) or long"
        " (timestamp + id + value columns), by how surprising its values were under the distribution the model"
        " predicted from the values before them. Irregular exports are fine: gaps, repeated timestamps, steps off"
        " the grid and a clock that moves back are all scored (docs/anomaly.md).",
    )
    sub.set_defaults(command=detect, command_name="detect")
    sub.add_argument("input", type=Path, nargs="?", help="CSV, TSV or Parquet file (or read --prometheus)")
    _prometheus_arguments(sub)
    sub.add_argument("-o", "--output", type=Path, metavar="PATH",
                     help="the input's rows with anomaly_score, is_anomaly and the band, .csv or .parquet"
                     " (default: CSV to stdout)")
    sub.add_argument("--plot", type=Path, metavar="PNG", help="PNG of the series, its band and the flagged values")
    sub.add_argument("-c", "--checkpoint", default=DEFAULT_MODEL, metavar="CHECKPOINT",
                     help=f"model of either family (default: the embedded {DEFAULT_MODEL})")
    budget = sub.add_mutually_exclusive_group()
    budget.add_argument("--alerts-per-day", type=float, default=defaults.alerts_per_day, metavar="N",
                        help="alert budget: flagged values per day of each series"
                        f" (default: {defaults.alerts_per_day:g})")
    budget.add_argument("--false-alarm-rate", type=float, metavar="RATE",
                        help="alert budget as the share of normal values allowed to be flagged, e.g. 0.001")
    sub.add_argument("--steps-ahead", type=int, metavar="N",
                     help="score every value at most N steps past its context (default: half the patch)")
    sub.add_argument("--window", type=int, default=defaults.window, metavar="N",
                     help="values a window test reads (drifts, broken cycles), 0 for none (default: 0)")
    sub.add_argument("--band-level", type=float, default=defaults.band_level, metavar="LEVEL",
                     help=f"central probability of the reported band (default: {defaults.band_level})")
    sub.add_argument("--calibration-window", type=int, default=Calibration().window, metavar="N",
                     help=f"past scores each score is calibrated against (default: {Calibration().window})")
    sub.add_argument("--timestamp-column", metavar="NAME", help="name of the timestamp column (default: detected)")
    sub.add_argument("--id-column", metavar="NAME", help="name of the series id column of a long table")
    sub.add_argument("--target-columns", type=_names, metavar="NAMES",
                     help="comma-separated columns to score (default: all numeric)")
    sub.add_argument("--freq", metavar="FREQ", help="grid step such as 5min or h (default: the dominant step)")
    sub.add_argument("--device", metavar="DEVICE", help="torch device such as cpu or cuda")


if __name__ == "__main__":
    sys.exit(main())
