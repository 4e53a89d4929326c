"""Figures the documentation quotes are checked against the code that produces them, so they cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from toto import Toto, TotoConfig

REPO = Path(__file__).resolve().parents[1]


def _parameters(model_config: dict) -> float:
    return sum(p.numel() for p in Toto(TotoConfig(**{"stride": model_config["patch_size"], **model_config})).parameters())


def test_training_docs_quote_the_pretrain_tiny_parameter_count():
    config = yaml.safe_load((REPO / "configs" / "pretrain-tiny.yaml").read_text())["model"]["model_config"]
    quoted = re.search(r"`configs/pretrain-tiny\.yaml` \| the embedded `toto-tiny` \(([\d.]+)M parameters\)",
                       (REPO / "docs" / "training.md").read_text())
    assert quoted, "docs/training.md no longer quotes the pretrain-tiny parameter count"
    assert f"{_parameters(config) / 1e6:.2f}" == quoted.group(1)


def test_readme_parity_bounds_hold_in_the_record_it_cites():
    readme = " ".join((REPO / "README.md").read_text().split())
    bound, log_prob_bound = map(float, re.search(
        r"equal the official package's to ([\d.e-]+) \(relative; log-probabilities to ([\d.e-]+)\) at the full"
        r" 151M architecture", readme).groups())
    record = (REPO / "docs" / "benchmarks.md").read_text()
    section = record.split("<!-- begin:parity-base-151M -->")[1].split("<!-- end:parity-base-151M -->")[0]
    errors = {name: float(value) for name, value in re.findall(r"^\| (\w+) \| ([\d.]+e[+-]\d+) \|$", section, re.M)}
    assert {"mean", "forecast_mean_kv1", "log_prob"} <= set(errors)
    assert errors.pop("log_prob") <= log_prob_bound
    assert max(errors.values()) <= bound
