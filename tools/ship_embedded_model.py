"""Ship a finished `make pretrain-tiny` run as the embedded model, only if it beats the current one on validation.

    .venv/bin/python tools/ship_embedded_model.py runs/pretrain-tiny --minutes 95

1. Evaluates, with `boom eval` on data/embedded/validation (the windows and metrics of `make eval-embedded`):
   seasonal naive, AutoETS, AutoTheta, the current default embedded model (`--against`) and the run's export/,
   each Toto model at the context it was trained with (the run's config; the shipped model's training_summary.json,
   as the pipelines default to it). Results are cached in --eval-dir per model, and per weights file and context
   (`toto-tiny@<sha256 prefix>-c<context>`), so reruns only evaluate what is new.
2. Scores them as `boom leaderboard` does (MASE and CRPS over seasonal naive's, shifted geometric means) and
   writes the per-series table to <eval-dir>/validation_table.md.
3. If the run's weights are better than the current default on both aggregates (or --force), copies config.json
   and model.safetensors into the package as toto/checkpoints/<--name> (a Toto 2.0 run ships beside toto-tiny as
   toto2-tiny; making it the default is then the one-line change of `toto.model.checkpoint.DEFAULT_MODEL`), writes training_summary.json beside them (data, steps, windows, wall time,
   validation scores) and the loss curve to docs/embedded-model-loss.png. Otherwise it changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from boom import leaderboard
from toto.model.checkpoint import CONFIG_FILE, DEFAULT_MODEL, EMBEDDED_DIR, WEIGHTS_FILE
from toto.pipeline import trained_context_length

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("seasonalnaive", "autoets", "autotheta")
NAMES = {"seasonalnaive": "seasonal naive", "autoets": "AutoETS", "autotheta": "AutoTheta"}


def weights_id(name: str, folder: Path, context_length: int) -> str:
    """`<name>@<first 10 hex digits of the weights' sha256>-c<context>`: a results folder per weights and context."""
    digest = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()[:10]
    return f"{name}@{digest}-c{context_length}"


def boom_eval(model: str, data: Path, out: Path, checkpoint: Path | None = None, name: str | None = None,
              context_length: int | None = None) -> None:
    """`boom eval` in a subprocess (it resumes: configurations already in the results file are skipped)."""
    command = [str(Path(sys.executable).with_name("boom")), "eval", "--model", model, "--data", str(data),
               "--out", str(out), "--no-progress"]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint), "--context-length", str(context_length)]
    if name is not None:
        command += ["--name", name]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def scores(eval_dir: Path, models: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(aggregate table: MASE and CRPS ratios and mean CRPS rank per model, per-series CRPS and MASE ratios)."""
    results = {name: table for name, table in leaderboard.load_results(eval_dir).items() if name in models}
    scored = leaderboard.score(results)
    scaled = scored[scored["part"] == "scaled"]
    aggregate = scaled.groupby("model").agg(mase=("point", leaderboard.shifted_gmean),
                                            crps=("crps", leaderboard.shifted_gmean), rank=("rank", "mean"))
    per_series = scaled.pivot_table(index="series", columns="model", values=["crps", "point"])
    return aggregate.loc[models], per_series


def markdown(aggregate: pd.DataFrame, per_series: pd.DataFrame, labels: dict[str, str]) -> str:
    """The validation tables of docs/embedded-model.md."""
    lines = ["| model | MASE / seasonal naive | CRPS / seasonal naive | mean CRPS rank |", "|---|---|---|---|"]
    for model, row in aggregate.sort_values("crps").iterrows():
        lines.append(f"| {labels.get(model, model)} | {row['mase']:.3f} | {row['crps']:.3f} | {row['rank']:.2f} |")
    models = [m for m in aggregate.index if m != "seasonalnaive"]
    lines += ["", "Per series, MASE / seasonal naive and CRPS / seasonal naive (MASE, CRPS):", "",
              "| series | " + " | ".join(labels.get(m, m) for m in models) + " |",
              "|---|" + "---|" * len(models)]
    for series in per_series.index:
        cells = [f"{per_series.loc[series, ('point', m)]:.2f}, {per_series.loc[series, ('crps', m)]:.2f}"
                 for m in models]
        lines.append(f"| {series} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run's default_root_dir (with export/ and loss_curve.csv)")
    parser.add_argument("--minutes", type=float, required=True, help="wall time of the run, for the record")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "pretrain-tiny.yaml")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "embedded" / "validation")
    parser.add_argument("--eval-dir", type=Path, default=REPO / "runs" / "validation-eval")
    parser.add_argument("--name", default=DEFAULT_MODEL, help="the embedded folder to ship into (toto/checkpoints/NAME)")
    parser.add_argument("--against", default=DEFAULT_MODEL, help="the embedded model to beat (the current default)")
    parser.add_argument("--force", action="store_true", help="ship even if it does not beat the current weights")
    args = parser.parse_args()

    target, against = EMBEDDED_DIR / args.name, EMBEDDED_DIR / args.against
    export = args.run / "export"
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (export / name).exists():
            raise SystemExit(f"{export / name} is missing: run `toto-train export {args.run}` first")
    config = yaml.safe_load(args.config.read_text())
    run_context = int(config["data"]["context_length"])
    current_context = trained_context_length(against)
    for model in BASELINES:
        boom_eval(model, args.data, args.eval_dir)
    current = weights_id(args.against, against, current_context)
    candidate = weights_id(args.name, export, run_context)
    boom_eval("toto", args.data, args.eval_dir, checkpoint=against, name=current, context_length=current_context)
    boom_eval("toto", args.data, args.eval_dir, checkpoint=export, name=candidate, context_length=run_context)

    models = [candidate, *([current] if current != candidate else []), *BASELINES]
    aggregate, per_series = scores(args.eval_dir, models)
    labels = {candidate: f"**this run** ({candidate})", current: f"current default ({current})", **NAMES}
    table = markdown(aggregate, per_series, labels)
    (args.eval_dir / "validation_table.md").write_text(table)
    print(table)

    better = all(aggregate.loc[candidate, k] < aggregate.loc[current, k] for k in ("mase", "crps"))
    if current == candidate:
        print("the run's weights are already the shipped ones")
    if not (better or args.force):
        print(f"not shipped: {candidate} does not beat {current} on both MASE and CRPS")
        return
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(export / name, target / name)
    curve = pd.read_csv(args.run / "loss_curve.csv")
    data_summary = pd.read_csv(REPO / "data" / "embedded" / "summary.csv")
    train_rows = data_summary[data_summary["split"] == "train"]
    validation = curve.dropna(subset=["val_loss"])
    summary = {
        "status": "trained",
        "config": str(args.config.relative_to(REPO)),
        "data": {
            "config": "configs/embedded-data.yaml",
            "real_training_datasets": int((train_rows["series"] > 0).sum()),
            "real_training_series": int(train_rows["series"].sum()),
            "validation_series": int(data_summary.loc[data_summary["split"] == "validation", "series"].sum()),
            "sources": [{"class_path": s["class_path"], **s.get("init_args", {})}
                        for s in config["data"]["sources"]],
        },
        "steps": int(curve["step"].max()),
        "windows_seen": int(curve["step"].max()) * int(config["data"]["batch_size"]),
        "context_length": run_context,
        "wall_minutes": args.minutes,
        "final_train_loss": round(float(curve["train_loss"].dropna().tail(50).mean()), 4),
        "best_val_loss": round(float(validation["val_loss"].min()), 4),
        "validation": {labels.get(m, m).replace("**", ""): {k: round(float(aggregate.loc[m, k]), 4)
                                                           for k in ("mase", "crps")} for m in models},
        "validation_metric": "shifted geometric mean over data/embedded/validation of MASE and CRPS / seasonal naive",
    }
    (target / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.copyfile(args.run / "loss_curve.png", REPO / "docs" / "embedded-model-loss.png")
    print(f"shipped {candidate} to {target}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
