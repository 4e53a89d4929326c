"""The service's model process (serve.model_process) on its own: a real child process, started with "spawn"."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("bentoml", reason=missing("serve"))

from pathlib import Path

import torch

from serve.engine import EngineSpec
from serve.model_process import ModelProcess
from toto.model.config import TotoConfig
from toto.model.toto import Toto

pytestmark = pytest.mark.integration  # spawns the child


def spec(checkpoint: str) -> EngineSpec:
    return EngineSpec(checkpoint=checkpoint, device="cpu", dtype=torch.float32, samples_per_batch=8,
                      memory_budget_bytes=2**28)


def test_the_child_loads_its_checkpoint_before_any_request(tmp_path: Path) -> None:
    checkpoint = Toto.from_config(TotoConfig.tiny()).save_pretrained(tmp_path / "checkpoint")
    process = ModelProcess(spec(str(checkpoint)))
    try:
        process.settle(timeout_s=60)
        assert process.loaded and process.load_failure is None
    finally:
        process.close()


def test_a_child_that_cannot_load_says_why(tmp_path: Path) -> None:
    process = ModelProcess(spec(str(tmp_path / "missing")))
    try:
        process.settle(timeout_s=60)
        assert not process.loaded
        assert f"could not load checkpoint {str(tmp_path / 'missing')!r}" in process.load_failure
    finally:
        process.close()
