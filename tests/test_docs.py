"""Figures the documentation quotes are checked against the code that produces them, so they cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from toto import Toto, TotoConfig

REPO = Path(__file__).resolve().parents[1]


def _parameters(model_config: dict) -> float:
    model = Toto(TotoConfig(**{"stride": model_config["patch_size"], **model_config}))
    return sum(p.numel() for p in model.parameters())


def test_training_docs_quote_the_pretrain_tiny_parameter_count():
    config = yaml.safe_load((REPO / "configs" / "pretrain-tiny.yaml").read_text())["model"]["model_config"]
    quoted = re.search(r"`configs/pretrain-tiny\.yaml` \| the embedded `toto-tiny` \(([\d.]+)M parameters\)",
                       (REPO / "docs" / "training.md").read_text())
    assert quoted, "docs/training.md no longer quotes the pretrain-tiny parameter count"
    assert f"{_parameters(config) / 1e6:.2f}" == quoted.group(1)
