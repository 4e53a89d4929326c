"""Training on several processes, for real: the `toto-train fit` CLI under Lightning's DDP with 2 CPU processes
(gloo), against one process with the same global batch (Toto 1.0 and Toto 2.0); resuming a DDP checkpoint under
DDP and under one process; which process writes the run's files; FSDP's refusal on CPU.

Tolerance of the loss comparison (docs/training.md, "Several processes"): relative 1e-5. The two runs train on
the same windows (`train.datamodule.EpochOrder`) with the same objective (`train.base_module.global_batch_mean`),
so they differ only in the order of float32 sums (each process sums its half, the all-reduce adds the halves),
about 1e-7 relative, which a few AdamW steps do not grow past 1e-6. A wrong global batch (each rank drawing the
same windows) or a mean of per-rank means changes the loss by more than 1e-3 (6% at the first step here).
"""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from train_fixtures import REPO, table_source, tiny_fit_args, write_co2_csv

from train.cli import run_cli
from train.datamodule import ResumableDataLoader, TotoDataModule
from train.sources import TableSource
from train.windows import collate_windows

pytestmark = pytest.mark.integration  # starts processes

BATCH = 4  # per process; the one-process runs take 2 x BATCH
STEPS, RESUMED_STEPS = 4, 6
LOSS_RTOL = 1e-5
# Every file a process opens for writing or moves into place from Python (checkpoints are written to a temporary
# file, then moved), logged with the process's rank: torch.distributed's, or the launcher's LOCAL_RANK before the
# process group exists. os.write on a descriptor opened first is not itself an audited event.
WRITE_LOGGER = '''
import os, sys
_folder = os.environ.get("TEST_WRITE_LOG")
if _folder:
    _log = os.open(os.path.join(_folder, f"writes-{os.getpid()}.tsv"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)

    def _record(event, args):
        if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
            path, mode, flags = args
            if isinstance(mode, str):
                writes = any(c in mode for c in "wax+")
            else:
                writes = bool(flags & (os.O_WRONLY | os.O_RDWR))
        elif event == "os.rename":  # also os.replace: a file written elsewhere and moved in
            path, writes = args[1], True
        else:
            return
        if writes:
            dist = sys.modules.get("torch.distributed")
            distributed = dist is not None and dist.is_initialized()
            rank = dist.get_rank() if distributed else int(os.environ.get("LOCAL_RANK", 0))
            os.write(_log, f"{rank}\\t{os.path.abspath(os.fsdecode(path))}\\n".encode())

    sys.addaudithook(_record)
'''


def fit_args(run: Path, sources: list[dict], steps: int, batch: int, extra: list[str] = ()) -> list[str]:
    # One learning-rate schedule for every run, however many steps it takes.
    return tiny_fit_args(run, sources, steps=steps, extra=["--model.stable_steps", "100", "--data.batch_size",
                                                          str(batch), "--trainer.accelerator", "cpu", *extra])


def fit_ddp(args: list[str], write_log: Path) -> None:
    """`python -m train.cli <args>` with 2 processes: Lightning starts the second by running the command again."""
    write_log.mkdir(parents=True, exist_ok=True)
    (write_log / "sitecustomize.py").write_text(WRITE_LOGGER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TEST_WRITE_LOG": str(write_log),
           "PYTHONPATH": os.pathsep.join([str(write_log), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "train.cli", *args, "--trainer.strategy", "ddp", "--trainer.devices",
                           "2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def train_losses(run: Path) -> dict[int, float]:
    rows = csv.DictReader((run / "loss_curve.csv").read_text().splitlines())
    return {int(r["step"]): float(r["train_loss"]) for r in rows if r["train_loss"] != "nan"}


def writes_by_rank(write_log: Path, under: Path) -> dict[int, set[str]]:
    written: dict[int, set[str]] = {}
    for log in write_log.glob("writes-*.tsv"):
        for line in log.read_text().splitlines():
            rank, path = line.split("\t")
            if Path(path).is_relative_to(under):
                written.setdefault(int(rank), set()).add(str(Path(path).relative_to(under)))
    return written


def test_two_processes_train_as_one_with_the_global_batch_and_resume_under_either(tmp_path):
    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]  # 59 missing values: unequal masks per rank
    straight = run_cli(fit_args(tmp_path / "one", sources, RESUMED_STEPS, 2 * BATCH))
    expected = train_losses(tmp_path / "one")
    assert sorted(expected) == list(range(1, RESUMED_STEPS + 1))

    ddp = tmp_path / "ddp"
    fit_ddp(fit_args(ddp, sources, STEPS, BATCH), tmp_path / "writes-first")
    first = train_losses(ddp)
    assert sorted(first) == list(range(1, STEPS + 1))
    for step, loss in first.items():
        assert loss == pytest.approx(expected[step], rel=LOSS_RTOL), step

    # Only rank 0 writes the checkpoints, the loss curve, its plot and the export; rank 1 writes nothing there.
    written = writes_by_rank(tmp_path / "writes-first", ddp)
    assert set(written) == {0}, {rank: sorted(paths) for rank, paths in written.items()}
    for name in ("loss_curve.csv", "loss_curve.png", "export/config.json", "checkpoints/last.ckpt"):
        assert name in written[0], sorted(written[0])
    assert (ddp / "export" / "model.safetensors").is_file() and (ddp / "loss_curve.png").stat().st_size > 1000

    # The DDP checkpoint resumes under one process with the global batch ...
    copy = tmp_path / "ddp-then-one"
    shutil.copytree(ddp, copy)
    one = run_cli([*fit_args(copy, sources, RESUMED_STEPS, 2 * BATCH), "--ckpt_path", "last"])
    # ... and under DDP again.
    fit_ddp([*fit_args(ddp, sources, RESUMED_STEPS, BATCH), "--ckpt_path", "last"], tmp_path / "writes-resumed")
    assert set(writes_by_rank(tmp_path / "writes-resumed", ddp)) == {0}
    for resumed in (ddp, copy):
        losses = train_losses(resumed)
        assert sorted(losses) == list(range(1, RESUMED_STEPS + 1)), resumed.name  # the curve goes on
        for step in range(STEPS + 1, RESUMED_STEPS + 1):
            assert losses[step] == pytest.approx(expected[step], rel=LOSS_RTOL), (resumed.name, step)

    ddp_weights = torch.load(ddp / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert one.trainer.global_step == straight.trainer.global_step == RESUMED_STEPS
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(one.model.state_dict()[name], value, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(ddp_weights[name], value, rtol=1e-4, atol=1e-6)


def test_toto2_module_trains_on_two_processes_as_on_one(tmp_path):
    """Toto 2.0's objective (pinball loss, weighted context and horizon) under DDP, on the gqa fixture."""
    from test_train_v2 import v2_fit_args

    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]

    def args(run: Path, batch: int) -> list[str]:
        return v2_fit_args(run, sources, steps=3, extra=["--data.batch_size", str(batch), "--trainer.accelerator",
                                                         "cpu", "--export.enabled", "false"])

    run_cli(args(tmp_path / "one", 2 * BATCH))
    fit_ddp(args(tmp_path / "ddp", BATCH), tmp_path / "writes")
    expected, losses = train_losses(tmp_path / "one"), train_losses(tmp_path / "ddp")
    assert sorted(losses) == sorted(expected) == [1, 2, 3]
    for step, loss in losses.items():
        assert loss == pytest.approx(expected[step], rel=LOSS_RTOL), step


def _window_ends(loader: ResumableDataLoader, batches: int) -> list[list[float]]:
    """Each batch's windows, named by their last value (on a ramp, where the window ends)."""
    out = []
    for batch in loader:
        out.append(sorted(float(row[0, -1]) for row in batch.series))
        if len(out) == batches:
            break
    return out


def test_processes_share_out_the_windows_one_process_would_train_on(tmp_path):
    ramp = tmp_path / "ramp.csv"
    pd.DataFrame({"timestamp": pd.date_range("2024-01-01", periods=5000, freq="h"),
                  "value": np.arange(5000.0)}).to_csv(ramp, index=False)
    data = TotoDataModule([TableSource(str(ramp), id_column=None)], context_length=64, patch_size=8,
                          val_length=24, train_windows_per_epoch=101)  # 50 windows per rank, the last one left out
    data.setup()

    def loader(batch_size: int, world: int, rank: int) -> ResumableDataLoader:
        return ResumableDataLoader(data.train_dataset, batch_size, data.seed, world, rank, collate_fn=collate_windows)

    one = _window_ends(loader(8, 1, 0), 12)
    ranks = [loader(4, 2, rank) for rank in (0, 1)]
    assert [len(r) for r in ranks] == [13, 13]  # 12 batches of 4 and one of 2 each
    dealt = [_window_ends(r, 5) for r in ranks]
    for step in range(5):
        assert sorted(dealt[0][step] + dealt[1][step]) == one[step], step
    # A DDP position resumes under one process at the next global batch.
    state = ranks[0].state_dict()
    assert state == {"epoch": 0, "windows_done": 40}
    single = loader(8, 1, 0)
    single.load_state_dict(state)
    assert _window_ends(single, 7) == one[5:12]


def test_fsdp_on_cpu_is_refused_with_a_clear_error(tmp_path):
    """Lightning's FSDP runs on GPUs only; benchmarks/gpu_check.py runs it on one GPU."""
    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]
    args = fit_args(tmp_path / "run", sources, 1, BATCH, ["--config", str(REPO / "configs" / "strategy" / "fsdp.yaml"),
                                                          "--trainer.accelerator", "cpu", "--trainer.precision",
                                                          "32-true", "--trainer.devices", "2"])
    with pytest.raises(ValueError, match="strategy `fsdp` requires a GPU accelerator"):
        run_cli(args)
