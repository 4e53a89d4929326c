"""Install a finished `make pretrain-tiny` run as the embedded model (toto/checkpoints/toto-tiny).

    .venv/bin/python tools/ship_embedded_model.py runs/pretrain-tiny --minutes 42

Copies the run's export (config.json + model.safetensors) into the package, writes training_summary.json (status,
steps, windows seen, final losses, wall time, config and data lists) beside it, and the loss curve to
docs/embedded-model-loss.png, so that docs/embedded-model.md and `toto forecast` describe the weights that ship.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd
import yaml

from toto.model.checkpoint import CONFIG_FILE, EMBEDDED_DIR, WEIGHTS_FILE

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="the run's default_root_dir (with export/ and loss_curve.csv)")
    parser.add_argument("--minutes", type=float, required=True, help="wall time of the run, for the record")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "pretrain-tiny.yaml")
    parser.add_argument("--name", default="toto-tiny")
    args = parser.parse_args()

    target = EMBEDDED_DIR / args.name
    target.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        shutil.copyfile(args.run / "export" / name, target / name)

    curve = pd.read_csv(args.run / "loss_curve.csv")
    config = yaml.safe_load(args.config.read_text())
    validation = curve.dropna(subset=["val_loss"])
    summary = {
        "status": "trained",
        "config": str(args.config.relative_to(REPO)),
        "steps": int(curve["step"].max()),
        "windows_seen": int(curve["step"].max()) * int(config["data"]["batch_size"]),
        "context_length": int(config["data"]["context_length"]),
        "wall_minutes": args.minutes,
        "final_train_loss": round(float(curve["train_loss"].dropna().tail(50).mean()), 4),
        "best_val_loss": round(float(validation["val_loss"].min()), 4),
        "data": "configs/embedded-data.yaml (train list) + synthetic series (train.sources.SyntheticSource)",
    }
    (target / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.copyfile(args.run / "loss_curve.png", REPO / "docs" / "embedded-model-loss.png")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
