"""`boom` command line: download the benchmark, evaluate a forecaster, print the leaderboard.

    boom download --out ~/boom_data                       # where the Hugging Face hub is reachable
    boom eval --model toto --checkpoint Datadog/Toto-Open-Base-1.0 --data ~/boom_data --out results/
    boom eval --model seasonalnaive --data ~/boom_data --out results/ --subset boomlet
    boom leaderboard results/ ../shared/boom/results --plot leaderboard.png
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="Using `json`-module", category=UserWarning)  # GluonTS's import notice

from boom import data, forecasters, leaderboard  # noqa: E402
from boom.evaluate import run  # noqa: E402


def _eval(args: argparse.Namespace) -> int:
    properties = data.load_properties(Path(args.data) if args.data else None, subset=args.subset)
    configs = data.configurations(properties, terms=args.terms, series=args.series)
    partial = args.subset != "boom" or args.series  # download only the series needed, else everything
    data_dir = data.resolve_data_dir(args.data, series=sorted({c.series for c in configs}) if partial else None)
    if args.model == "toto":
        forecaster = forecasters.toto(args.checkpoint or forecasters.DEFAULT_TOTO_CHECKPOINT,
                                      context_length=args.context_length, num_samples=args.num_samples,
                                      samples_per_batch=args.samples_per_batch, batch_size=args.batch_size,
                                      seed=args.seed, device=args.device, name=args.name or "toto")
    else:
        if args.checkpoint:
            raise SystemExit(f"--checkpoint applies to --model toto only, not {args.model}.")
        forecaster = forecasters.classical(args.name or args.model, forecasters.CLASSICAL[args.model],
                                           context_length=args.context_length)
    summary = run(forecaster, data_dir, configs, Path(args.out), progress=not args.no_progress)
    print(f"{len(summary.evaluated)} configurations evaluated, {len(summary.skipped)} already done, "
          f"{len(summary.failed)} failed -> {summary.results_file}")
    for key, error in summary.failed.items():
        print(f"  failed {key}: {error}", file=sys.stderr)
    return 1 if summary.failed else 0


def _leaderboard(args: argparse.Namespace) -> int:
    results = leaderboard.load_results(*args.results, subset=args.subset)
    scores = leaderboard.score(results)
    table = leaderboard.leaderboard(scores)
    print(table.map(leaderboard.format_number).to_string())
    properties = data.load_properties(Path(args.data) if args.data else None)
    for by in args.by:
        print(f"\nScaled CRPS by {by}:")
        print(leaderboard.breakdown(scores, by, properties).map(leaderboard.format_number).to_string())
    first = Path(args.results[0])
    csv_path = Path(args.csv) if args.csv else first / "leaderboard.csv"
    table.map(leaderboard.format_number).to_csv(csv_path)
    plot_path = leaderboard.plot(table, Path(args.plot) if args.plot else first / "leaderboard.png")
    print(f"\nWrote {csv_path} and {plot_path}")
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
    ev.add_argument("--name", help="results folder / model name (default: --model); name fine-tunes here")
    ev.add_argument("--data", help=f"folder of series folders (default ${data.DATA_ENV_VAR}, else the hub)")
    ev.add_argument("--subset", choices=["boom", "boomlet"], default="boom", help="boomlet: the 32-series subset")
    ev.add_argument("--terms", nargs="+", choices=[t.value for t in data.Term], default=[t.value for t in data.Term])
    ev.add_argument("--series", nargs="+", help="only these series (e.g. ds-0-T)")
    ev.add_argument("--out", default="results", help="results root: writes OUT/<name>/all_results.csv")
    ev.add_argument("--context-length", type=int, default=forecasters.DEFAULT_CONTEXT_LENGTH)
    ev.add_argument("--num-samples", type=int, default=forecasters.DEFAULT_NUM_SAMPLES, help="Toto only")
    ev.add_argument("--samples-per-batch", type=int, help="Toto only: sample paths decoded together")
    ev.add_argument("--batch-size", type=int, default=16, help="Toto only: test windows forecast together")
    ev.add_argument("--seed", type=int, default=0, help="Toto only")
    ev.add_argument("--device", default="cpu", help="Toto only: cpu, cuda, ...")
    ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    ev.set_defaults(func=_eval)

    lb = commands.add_parser("leaderboard", help="rank the models of one or more results folders")
    lb.add_argument("results", nargs="+", help="folders holding <model>/all_results.csv (with seasonalnaive)")
    lb.add_argument("--subset", choices=["boom", "boomlet"], help="only the configurations of this subset")
    lb.add_argument("--by", nargs="*", choices=leaderboard.GROUPINGS, default=[],
                    help="also print scaled CRPS per domain, frequency, term or type")
    lb.add_argument("--data", help="folder with its own boom_properties.json (for --by on a custom dataset)")
    lb.add_argument("--csv", help="where to write the table (default RESULTS/leaderboard.csv)")
    lb.add_argument("--plot", help="bar chart PNG (default RESULTS/leaderboard.png)")
    lb.set_defaults(func=_leaderboard)

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
