"""Ship a finished `make pretrain-tiny` run as the embedded model, only if it beats the current one on validation.

    .venv/bin/python tools/ship_embedded_model.py runs/pretrain-tiny runs/pretrain-tiny-2048 \
        --config configs/pretrain-tiny.yaml configs/pretrain-tiny-2048.yaml --contexts 512 \
        --ensembles 128,512,2048 --minutes 95

A run is one training folder, or a curriculum: its stages' folders and configs in order, each stage starting from the
previous one's export. The last stage's export is the candidate.

1. Evaluates, with `boom eval` on data/embedded/validation (the windows and metrics of `make eval-embedded`):
   seasonal naive, AutoETS, AutoTheta, the current default embedded model (`--against`) and the run's export/,
   each Toto model at its default context (the shipped model's training_summary.json, as the pipelines read it; for
   the run, the last stage's context, each of `--contexts` and each context ensemble of `--ensembles`: the best of
   them on validation becomes its default, `default_context_length` and `context_ensemble`). Results are cached in
   --eval-dir per model, and per weights file and context (`toto-tiny@<sha256 prefix>-c<context>`, or
   `-c128+512+2048` for an ensemble), so reruns only evaluate what is new.
2. Scores them as `boom leaderboard` does (MASE and CRPS over seasonal naive's, shifted geometric means) and
   writes the per-series table to <eval-dir>/validation_table.md.
3. If the run's weights are better than the current default on both aggregates (or --force), copies config.json
   and model.safetensors into the package as toto/checkpoints/<--name> (a Toto 2.0 run ships beside toto-tiny as
   toto2-tiny; making it the default is then the one-line change of `toto.options.DEFAULT_MODEL`), writes
   training_summary.json beside them (data, steps, windows, wall time, validation scores; per stage for a
   curriculum) and the loss curve of every stage to docs/embedded-model-loss.png.
   Otherwise it changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from boom import leaderboard
from toto.checkpoint_io import CONFIG_FILE, EMBEDDED_DIR, WEIGHTS_FILE, read_training_summary
from toto.options import DEFAULT_MODEL
from toto.pipeline import default_context_length

REPO = Path(__file__).resolve().parents[1]
BASELINES = ("seasonalnaive", "autoets", "autotheta")
NAMES = {"seasonalnaive": "seasonal naive", "autoets": "AutoETS", "autotheta": "AutoTheta"}


Context = tuple[int, tuple[int, ...] | None]  # (default context length, context ensemble or None)


def weights_id(name: str, folder: Path, context: Context) -> str:
    """`<name>@<first 10 hex digits of the weights' sha256>-c<context>` (`-c128+512+2048` for an ensemble): a
    results folder per weights and context."""
    digest = hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()[:10]
    length, ensemble = context
    return f"{name}@{digest}-c{'+'.join(map(str, ensemble)) if ensemble else length}"


def boom_eval(model: str, data: Path, out: Path, checkpoint: Path | None = None, name: str | None = None,
              context: Context | None = None) -> None:
    """`boom eval` in a subprocess (it resumes: configurations already in the results file are skipped)."""
    command = [str(Path(sys.executable).with_name("boom")), "eval", "--model", model, "--data", str(data),
               "--out", str(out), "--no-progress"]
    if checkpoint is not None:
        length, ensemble = context
        command += ["--checkpoint", str(checkpoint), "--context-length", str(length)]
        command += ["--context-ensemble", *map(str, ensemble)] if ensemble else []
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


def markdown(aggregate: pd.DataFrame, per_series: pd.DataFrame, labels: dict[str, str], columns: list[str]) -> str:
    """The validation tables of docs/embedded-model.md: every model's aggregates, and `columns`' per series."""
    lines = ["| model | MASE / seasonal naive | CRPS / seasonal naive | mean CRPS rank |", "|---|---|---|---|"]
    for model, row in aggregate.sort_values("crps").iterrows():
        lines.append(f"| {labels.get(model, model)} | {row['mase']:.3f} | {row['crps']:.3f} | {row['rank']:.2f} |")
    models = [m for m in columns if m != "seasonalnaive"]
    lines += ["", "Per series, MASE / seasonal naive and CRPS / seasonal naive (MASE, CRPS):", "",
              "| series | " + " | ".join(labels.get(m, m) for m in models) + " |",
              "|---|" + "---|" * len(models)]
    for series in per_series.index:
        cells = [f"{per_series.loc[series, ('point', m)]:.2f}, {per_series.loc[series, ('crps', m)]:.2f}"
                 for m in models]
        lines.append(f"| {series} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_stages(curves: list[pd.DataFrame], stages: list[dict], path: Path) -> None:
    """Training and validation loss of every stage on one step axis, each stage's start marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8, 4.5))
    offset = 0
    for number, (curve, stage) in enumerate(zip(curves, stages), start=1):
        steps = curve["step"] + offset
        train, validation = curve["train_loss"].notna(), curve["val_loss"].notna()
        label = f"stage {number} (context {stage['context_length']})" if len(stages) > 1 else ""
        losses = curve["train_loss"][train]
        axis.plot(steps[train], losses, alpha=0.2, color="grey")
        axis.plot(steps[train], losses.rolling(100, min_periods=1).mean(),
                  label=f"train loss (100-step mean) {label}".strip())
        axis.plot(steps[validation], curve["val_loss"][validation], "o-", label=f"validation loss {label}".strip())
        if number > 1:
            axis.axvline(offset, color="grey", linestyle=":")
        offset += stage["steps"]
    axis.set(xlabel="step", ylabel="loss", title="Embedded model training")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+",
                        help="the run's default_root_dir (with export/ and loss_curve.csv); a curriculum's, in order")
    parser.add_argument("--minutes", type=float, required=True, help="wall time of the run, for the record")
    parser.add_argument("--config", type=Path, nargs="+", required=True, help="each run's config, in order")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "embedded" / "validation")
    parser.add_argument("--eval-dir", type=Path, default=REPO / "runs" / "validation-eval")
    parser.add_argument("--name", default=DEFAULT_MODEL,
                        help="the embedded folder to ship into (toto/checkpoints/NAME)")
    parser.add_argument("--against", default=DEFAULT_MODEL, help="the embedded model to beat (the current default)")
    parser.add_argument("--contexts", type=int, nargs="*", default=[],
                        help="also evaluate the run at these contexts; the best on validation becomes its default "
                        "(training_summary.json's default_context_length)")
    parser.add_argument("--ensembles", nargs="*", default=[], metavar="N,N,...",
                        help="also evaluate the run with these context ensembles (sample paths pooled from windows "
                        "of these lengths); the best on validation becomes its default (context_ensemble)")
    parser.add_argument("--force", action="store_true", help="ship even if it does not beat the current weights")
    args = parser.parse_args()

    if len(args.runs) != len(args.config):
        raise SystemExit(f"{len(args.runs)} run folders and {len(args.config)} configs: give one config per stage, in "
                         "the runs' order")
    target, against = EMBEDDED_DIR / args.name, EMBEDDED_DIR / args.against
    export = args.runs[-1] / "export"
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (export / name).exists():
            raise SystemExit(f"{export / name} is missing: run `toto-train export {args.runs[-1]}` first")
    configs = [yaml.safe_load(path.read_text()) for path in args.config]
    config = configs[-1]
    run_context = int(config["data"]["context_length"])
    ensemble = read_training_summary(against).get("context_ensemble")
    current_context = (default_context_length(against), tuple(ensemble) if ensemble else None)
    for model in BASELINES:
        boom_eval(model, args.data, args.eval_dir)
    current = weights_id(args.against, against, current_context)
    # Weights already shipped are scored from the run's folder, so that their cached results are found again.
    same = (against / WEIGHTS_FILE).read_bytes() == (export / WEIGHTS_FILE).read_bytes()
    boom_eval("toto", args.data, args.eval_dir, checkpoint=export if same else against, name=current,
              context=current_context)
    try:
        ensembles = [tuple(sorted(int(n) for n in text.split(","))) for text in args.ensembles]
    except ValueError:
        raise SystemExit(f"--ensembles takes comma-separated context lengths such as 128,512,2048, got "
                         f"{args.ensembles}") from None
    contexts = [(c, None) for c in sorted({run_context, *args.contexts})] + [(max(e), e) for e in ensembles]
    tried = {context: weights_id(args.name, export, context) for context in contexts}
    for context, name in tried.items():
        boom_eval("toto", args.data, args.eval_dir, checkpoint=export, name=name, context=context)

    models = [*tried.values(), *([current] if current not in tried.values() else []), *BASELINES]
    aggregate, per_series = scores(args.eval_dir, models)
    # The default context: the one whose MASE and CRPS ratios have the lowest geometric mean on validation.
    chosen = min(contexts, key=lambda c: math.log(aggregate.loc[tried[c], "mase"] * aggregate.loc[tried[c], "crps"]))
    candidate = tried[chosen]
    labels = {**{name: f"this run at context {'+'.join(map(str, c[1])) if c[1] else c[0]} ({name})"
                 for c, name in tried.items()},
              candidate: f"**this run** ({candidate})", current: f"current default ({current})", **NAMES}
    columns = [candidate, *([current] if current != candidate else []), *BASELINES]
    table = markdown(aggregate, per_series, labels, columns)
    (args.eval_dir / "validation_table.md").write_text(table)
    print(table)

    better = all(aggregate.loc[candidate, k] < aggregate.loc[current, k] for k in ("mase", "crps"))
    if current == candidate:
        print("the run's weights are already the shipped ones")
    if not (better or args.force):
        print(f"not shipped: {candidate} does not beat {current} on both MASE and CRPS")
        return
    curves = [pd.read_csv(run / "loss_curve.csv") for run in args.runs]
    stages = [{"config": str(path.resolve().relative_to(REPO)), "context_length": int(c["data"]["context_length"]),
               "steps": int(curve["step"].max()),
               "windows_seen": int(curve["step"].max()) * int(c["data"]["batch_size"]),
               "best_val_loss": round(float(curve["val_loss"].min()), 4)}
              for path, c, curve in zip(args.config, configs, curves)]
    data_summary = pd.read_csv(REPO / "data" / "embedded" / "summary.csv")
    train_rows = data_summary[data_summary["split"] == "train"]
    summary = {
        "status": "trained",
        "config": [stage["config"] for stage in stages],
        "data": {
            "config": "configs/embedded-data.yaml",
            "real_training_datasets": int((train_rows["series"] > 0).sum()),
            "real_training_series": int(train_rows["series"].sum()),
            "validation_series": int(data_summary.loc[data_summary["split"] == "validation", "series"].sum()),
            "sources": [{"class_path": s["class_path"], **s.get("init_args", {})}
                        for s in config["data"]["sources"]],
        },
        "stages": stages,
        "steps": sum(stage["steps"] for stage in stages),
        "windows_seen": sum(stage["windows_seen"] for stage in stages),
        "context_length": run_context,
        **({"default_context_length": chosen[0]} if chosen[0] != run_context else {}),
        **({"context_ensemble": list(chosen[1])} if chosen[1] else {}),
        "wall_minutes": args.minutes,
        "final_train_loss": round(float(curves[-1]["train_loss"].dropna().tail(50).mean()), 4),
        "best_val_loss": stages[-1]["best_val_loss"],
        "validation": {labels.get(m, m).replace("**", ""): {k: round(float(aggregate.loc[m, k]), 4)
                                                           for k in ("mase", "crps")} for m in models},
        "validation_metric": "shifted geometric mean over data/embedded/validation of MASE and CRPS / seasonal naive",
    }
    target.mkdir(parents=True, exist_ok=True)  # written only once everything above has been computed
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(export / name, target / name)
    (target / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot_stages(curves, stages, REPO / "docs" / "embedded-model-loss.png")
    print(f"shipped {candidate} to {target}")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
