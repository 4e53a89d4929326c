"""The inputs the documentation's fragments suppose the reader has (`df`, `my_metrics.csv`, BOOM data), built from
real series, for tests/test_doc_examples.py: a block's `<!-- doc-test: setup: ... -->` imports or writes them.

The series is the repository's hourly electricity load (examples/electricity_demand.csv, 1,344 hours), with
`deploy`, a known-future covariate: 1 in the hour of a weekday's deploy window (14:00), 0 otherwise.

    python -m doc_inputs my_metrics.csv metrics.csv boom_data    # files, in the current folder
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "electricity_demand.csv"
HORIZON = 48


def electricity() -> pd.DataFrame:
    """The example's table: `timestamp` and `load`."""
    return pd.read_csv(EXAMPLE, parse_dates=["timestamp"])


def _deploys(timestamps: pd.Series) -> np.ndarray:
    return ((timestamps.dt.hour == 14) & (timestamps.dt.dayofweek < 5)).to_numpy(dtype=np.float64)


def electricity_with_deploys() -> tuple[pd.DataFrame, pd.DataFrame]:
    """`df` (timestamp, load, deploy) and `future`: the deploy column over the next HORIZON hours."""
    df = electricity()
    df["deploy"] = _deploys(df["timestamp"])
    index = pd.Series(pd.date_range(df["timestamp"].iloc[-1], periods=HORIZON + 1, freq="h")[1:])
    return df, pd.DataFrame({"timestamp": index, "deploy": _deploys(index)})


def gluonts_entries() -> list[dict]:
    """GluonTS entries of the load: target, start (a pd.Period) and item_id."""
    df = electricity()
    return [{"target": df["load"].to_numpy(np.float32), "start": pd.Period(df["timestamp"].iloc[0], freq="h"),
             "item_id": "load"}]


def covariate_tensors() -> tuple[torch.Tensor, int, torch.Tensor]:
    """`history` (load and deploy, time), `covariates` (1) and `future` (1, HORIZON): the layout of a forecast with
    covariates aligned with the targets."""
    df, future = electricity_with_deploys()
    history = torch.tensor(np.stack([df["load"].to_numpy(), df["deploy"].to_numpy()]), dtype=torch.float32)
    return history, 1, torch.tensor(future["deploy"].to_numpy()[None], dtype=torch.float32)


def quantile_model_inputs() -> dict[str, torch.Tensor | int]:
    """`Toto2Model.forecast`'s inputs for the load with deploy as `known_dynamic`: y, observed, ids (batch, variates,
    ...), x, x_observed, x_ids (batch, covariates, ...) and horizon."""
    history, _, future = covariate_tensors()
    y, x = history[None, :1], torch.cat([history[1:], future], dim=-1)[None]
    return {"y": y, "observed": y.isfinite(), "ids": torch.zeros(1, 1, dtype=torch.long), "x": x,
            "x_observed": x.isfinite(), "x_ids": torch.zeros(1, 1, dtype=torch.long), "horizon": HORIZON}


def write(name: str) -> None:
    """Write the file or folder the documents name `name`, in the current folder."""
    if name in ("my_metrics.csv", "metrics.csv"):
        electricity().to_csv(name, index=False)
    elif name == "boom_data":
        from boom_fixtures import write_sample_boom

        write_sample_boom(Path(name))
    else:
        raise SystemExit(f"doc_inputs: no input named {name!r}")


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        write(argument)
