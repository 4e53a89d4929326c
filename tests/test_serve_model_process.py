"""The service's model process (serve.model_process) on its own: a real child process, started with "spawn"."""

from __future__ import annotations

import time

import torch

from serve.engine import EngineSpec
from serve.model_process import ModelProcess
from toto.model.config import TotoConfig
from toto.model.toto import Toto


def spec(checkpoint: str) -> EngineSpec:
    return EngineSpec(checkpoint=checkpoint, device="cpu", dtype=torch.float32, samples_per_batch=8,
                      memory_budget_bytes=2**28)


def settle(process: ModelProcess, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not process.loaded and process.load_failure is None:
        assert time.monotonic() < deadline, "the model process neither loaded nor failed"
        time.sleep(0.1)


def test_the_child_loads_its_checkpoint_before_any_request(tmp_path) -> None:
    checkpoint = Toto.from_config(TotoConfig.tiny()).save_pretrained(tmp_path / "checkpoint")
    process = ModelProcess(spec(str(checkpoint)))
    try:
        settle(process)
        assert process.loaded and process.load_failure is None
    finally:
        process.close()


def test_a_child_that_cannot_load_says_why(tmp_path) -> None:
    process = ModelProcess(spec(str(tmp_path / "missing")))
    try:
        settle(process)
        assert not process.loaded
        assert f"could not load checkpoint {str(tmp_path / 'missing')!r}" in process.load_failure
    finally:
        process.close()
