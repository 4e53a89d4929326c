"""`boom` command line: download the benchmark, evaluate a forecaster, print the leaderboard.

    boom download --out ~/boom_data                       # where the Hugging Face hub is reachable
    boom eval --model toto --checkpoint Datadog/Toto-Open-Base-1.0 --data ~/boom_data --out results/
    boom eval --model seasonalnaive --data ~/boom_data --out results/ --subset boomlet
    boom eval --model toto --checkpoint toto-tiny --data my_metrics.csv --out results/   # your own table
    boom eval --model toto --data ~/boom_data --out results/ --devices 4 --device cuda    # configurations sharded
    boom leaderboard results/ ../shared/boom/results --out .       # writes ./leaderboard.csv and .png
    # (a model in both folders, results/toto and the published toto, is ranked once per folder)
    boom tie-order ../shared/boom/results --published ../shared/boom/boom_leaderboard.csv

Nothing is written into the folders a command reads: the leaderboard goes to the working folder or --out.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path

import pandas as pd

from boom import data, forecasters, leaderboard
from boom.evaluate import run, run_sharded
from toto.options import DEFAULT_NUM_SAMPLES, FEEDBACK


def _eval(args: argparse.Namespace) -> int:
    data_dir: Path | data.TablePanel
    if args.data and data.is_table(args.data):
        data_dir = data.TablePanel(args.data, args.timestamp_column, args.id_column, args.target_columns, args.freq)
        configs = data_dir.configurations(args.terms)
        if args.series:
            unknown = sorted(set(args.series) - set(data_dir.series))
            if unknown:
                raise ValueError(f"--series {unknown} are not in {args.data}; its series are {sorted(data_dir.series)}")
            configs = [c for c in configs if c.series in set(args.series)]
    else:
        properties = data.load_properties(Path(args.data) if args.data else None, subset=args.subset)
        configs = data.configurations(properties, terms=args.terms, series=args.series)
        partial = args.subset != "boom" or args.series  # download only the series needed, else everything
        data_dir = data.resolve_data_dir(args.data, series=sorted({c.series for c in configs}) if partial else None)
    if args.checkpoint and args.model != "toto":
        raise SystemExit(f"--checkpoint applies to --model toto only, not {args.model}.")
    if args.devices < 1:
        raise SystemExit(f"--devices must be at least 1, not {args.devices}.")
    if args.devices == 1:
        summary = run(_forecaster(args, args.device), data_dir, configs, Path(args.out), progress=not args.no_progress)
    else:  # one process per device, each building its forecaster on its own device
        summary = run_sharded(functools.partial(_forecaster, args), data_dir, configs, Path(args.out), args.devices,
                              accelerator=args.device.split(":")[0], progress=not args.no_progress)
    print(f"{len(summary.evaluated)} configurations evaluated, {len(summary.skipped)} already done, "
          f"{len(summary.failed)} failed -> {summary.results_file}")
    for key, error in summary.failed.items():
        print(f"  failed {key}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def _forecaster(args: argparse.Namespace, device: str) -> forecasters.Forecaster:
    name = args.name or forecasters.default_name(args.model, args.checkpoint)
    if args.model == "toto":
        return forecasters.toto(args.checkpoint or forecasters.DEFAULT_TOTO_CHECKPOINT,
                                context_length=args.context_length, num_samples=args.num_samples,
                                samples_per_batch=args.samples_per_batch, batch_size=args.batch_size,
                                seed=args.seed, device=device, name=name,
                                decode_block_size=args.decode_block_size, context_ensemble=args.context_ensemble,
                                feedback=args.feedback)
    return forecasters.classical(name, forecasters.CLASSICAL[args.model],
                                 context_length=args.context_length or forecasters.DEFAULT_CONTEXT_LENGTH)


def _leaderboard(args: argparse.Namespace) -> int:
    results = leaderboard.load_results(*args.results, subset=args.subset)
    naive = leaderboard.seasonal_naives(results)
    if len(naive) > 1:
        print(f"boom leaderboard: {len(naive)} folders hold {leaderboard.BASELINE}: scores are scaled by {naive[0]}, "
              "the first given", file=sys.stderr)
    scores = leaderboard.score(results)
    table = leaderboard.leaderboard(scores)
    print(table.map(leaderboard.format_number).to_string())
    properties = data.load_properties(Path(args.data) if args.data else None)
    for by in args.by:
        print(f"\nScaled CRPS by {by}:")
        print(leaderboard.breakdown(scores, by, properties).map(leaderboard.format_number).to_string())
    out = Path(args.out)
    csv_path = Path(args.csv) if args.csv else out / "leaderboard.csv"
    plot_path = Path(args.plot) if args.plot else out / "leaderboard.png"
    for path in (csv_path, plot_path):
        _refuse_inside_inputs(path, args.results)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    table.map(leaderboard.format_number).to_csv(csv_path)
    plot_path = leaderboard.plot(table, plot_path)
    print(f"\nWrote {csv_path} and {plot_path}")
    return 0


def _refuse_inside_inputs(path: Path, inputs: list[str]) -> None:
    """The folders a command reads (benchmark data, published results) are never written into."""
    target = path.expanduser().resolve()
    for folder in map(Path, inputs):
        if target.is_relative_to(folder.expanduser().resolve()):
            raise ValueError(f"{path} is inside {folder}, which this command only reads: write elsewhere (--out,"
                             " or run from another folder)")


def _tie_order(args: argparse.Namespace) -> int:
    scores = leaderboard.score(leaderboard.load_results(*args.results))
    published = pd.read_csv(args.published, index_col="model")
    print("\n".join(leaderboard.recover_tie_order(scores, published)))
    return 0


def _download(args: argparse.Namespace) -> int:
    series = list(data.load_properties(subset=args.subset)) if args.subset != "boom" else None
    print(f"Downloaded to {data.download(local_dir=args.out, series=series)}")
    return 0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="boom", description="BOOM benchmark: evaluate forecasters, rank them.")
    commands = root.add_subparsers(dest="command", required=True)

    ev = commands.add_parser("eval", help="evaluate a forecaster; resumes an interrupted run")
    ev.add_argument("--model", choices=forecasters.MODELS, required=True)
    ev.add_argument("--checkpoint", help="Toto checkpoint folder, embedded name (toto-tiny) or hub id "
                                         f"(default {forecasters.DEFAULT_TOTO_CHECKPOINT})")
    ev.add_argument("--name", help="results folder / model name (default: --model; for toto from another "
                                   "checkpoint than the published one, toto-<checkpoint folder name>, e.g. toto-tiny)")
    ev.add_argument("--data", help=f"folder of series folders (default ${data.DATA_ENV_VAR}, else the hub), or a"
                                   " CSV/TSV/Parquet table of your own (wide or long), read like `toto forecast`")
    ev.add_argument("--timestamp-column", help="table --data only: the timestamp column (default: detected)")
    ev.add_argument("--id-column", help="table --data only: the series id column of a long table (default: detected)")
    ev.add_argument("--target-columns", type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
                    help="table --data only: comma-separated columns to forecast (default: all numeric)")
    ev.add_argument("--freq", help="table --data only: pandas frequency (default: inferred)")
    ev.add_argument("--subset", choices=["boom", "boomlet"], default="boom", help="boomlet: the 32-series subset")
    ev.add_argument("--terms", nargs="+", choices=[t.value for t in data.Term], default=[t.value for t in data.Term])
    ev.add_argument("--series", nargs="+", help="only these series (e.g. ds-0-T)")
    ev.add_argument("--out", default="results", help="results root: writes OUT/<name>/all_results.csv")
    ev.add_argument("--context-length", type=int,
                    help="most recent steps each model sees (default: for toto, the default context the "
                    f"checkpoint's folder records; otherwise {forecasters.DEFAULT_CONTEXT_LENGTH})")
    ev.add_argument("--context-ensemble", type=int, nargs="+",
                    help="Toto 1.0 only: pool sample paths drawn from windows of these lengths (default: the "
                    "checkpoint's own context_ensemble at its default context; none at another --context-length)")
    ev.add_argument("--num-samples", type=int, default=None,
                    help=f"Toto 1.0 only: sample paths per forecast (default: {DEFAULT_NUM_SAMPLES})")
    ev.add_argument("--samples-per-batch", type=int, help="Toto only: sample paths decoded together")
    ev.add_argument("--batch-size", type=int, default=16, help="Toto only: test windows forecast together")
    ev.add_argument("--seed", type=int, default=0, help="Toto only")
    ev.add_argument("--decode-block-size", type=int,
                    help="Toto 2.0 only: decode the horizon this many steps at a time (a multiple of the patch "
                    "size), feeding each block's median back (default: the whole horizon in one pass)")
    ev.add_argument("--feedback", choices=FEEDBACK,
                    help="Toto 1.0 only: what a sample path's next patch is decoded from, its own draws (sample, "
                    "the default) or the mean forecast (mean)")
    ev.add_argument("--device", default="cpu", help="Toto only: cpu, cuda, ...")
    ev.add_argument("--devices", type=int, default=1,
                    help="processes (one per device with --device cuda) sharing out the configurations; their "
                         "parts merge into the same all_results.csv")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)

    lb = commands.add_parser("leaderboard", help="rank the models of one or more results folders")
    lb.add_argument("results", nargs="+", help="folders holding <model>/all_results.csv (with seasonalnaive)")
    lb.add_argument("--subset", choices=["boom", "boomlet"], help="only the configurations of this subset")
    lb.add_argument("--by", nargs="*", choices=leaderboard.GROUPINGS, default=[],
                    help="also print scaled CRPS per domain, frequency, term or type")
    lb.add_argument("--data", help="folder with its own boom_properties.json (for --by on a custom dataset)")
    lb.add_argument("--out", default=".", help="folder for leaderboard.csv and leaderboard.png (default: here)")
    lb.add_argument("--csv", help="where to write the table (default OUT/leaderboard.csv)")
    lb.add_argument("--plot", help="bar chart PNG (default OUT/leaderboard.png)")
    lb.set_defaults(func=_leaderboard)

    order = commands.add_parser("tie-order", help="recover a tie-breaking model order from published ranks")
    order.add_argument("results", nargs="+", help="the published results folders (<model>/all_results.csv)")
    order.add_argument("--published", required=True, help="the published leaderboard CSV (boom_leaderboard.csv)")
    order.set_defaults(func=_tie_order)

    dl = commands.add_parser("download", help=f"download {data.HUB_REPO} from the Hugging Face hub")
    dl.add_argument("--out", required=True, help="local folder to download into")
    dl.add_argument("--subset", choices=["boom", "boomlet"], default="boom")
    dl.set_defaults(func=_download)
    return root


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"boom {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
