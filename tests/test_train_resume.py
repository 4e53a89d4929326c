"""A training process killed with SIGKILL resumes from its last checkpoint at the same step (`--ckpt_path last`)."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import csv
import os
import signal
import subprocess
import sys
import time

import torch
from train_fixtures import REPO, table_source, tiny_fit_args, write_co2_csv  # noqa: F401

from train.cli import run_cli

pytestmark = pytest.mark.integration  # starts processes


def test_killed_run_resumes_from_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]
    every = ["--checkpoint.every_n_train_steps", "5", "--checkpoint.monitor", "null",
             "--trainer.val_check_interval", "1000"]
    args = tiny_fit_args(run, sources, steps=100_000, extra=every)
    env = dict(os.environ)
    process = subprocess.Popen([sys.executable, "-m", "train.cli", *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    saved_step = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert saved_step > 0 and saved_step % 5 == 0

    resumed = tiny_fit_args(run, sources, steps=saved_step + 5, extra=every)
    resumed[resumed.index("--model.stable_steps") + 1] = "100000"  # same schedule as the killed run
    cli = run_cli([*resumed, "--ckpt_path", "last"])
    assert cli.trainer.global_step == saved_step + 5
    assert cli.trainer.lr_scheduler_configs[0].scheduler.last_epoch == saved_step + 5
    rows = csv.DictReader((run / "loss_curve.csv").read_text().splitlines())
    steps = [int(r["step"]) for r in rows if r["train_loss"] != "nan"]
    assert steps == list(range(1, saved_step + 6)), "the loss curve continues the killed run without a restart"


def test_killed_and_resumed_run_reaches_the_weights_of_an_uninterrupted_one(tmp_path):
    """SIGKILL mid-epoch, resume with --ckpt_path last: the data loader's position and the random generators come
    back from the checkpoint, so the weights equal those of a run that was never interrupted."""
    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]
    # 64 windows of 16: 4 batches per epoch, so the kill lands mid-epoch and the runs cross epoch boundaries.
    extra = ["--checkpoint.every_n_train_steps", "3", "--checkpoint.monitor", "null",
             "--trainer.val_check_interval", "1000", "--data.train_windows_per_epoch", "64",
             "--export.enabled", "false"]
    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-m", "train.cli", *tiny_fit_args(killed, sources, steps=100_000,
                                                                                 extra=extra)],
                               cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, stderr.decode()[-2000:]
    saved = torch.load(last, map_location="cpu", weights_only=True)
    step = saved["global_step"]
    assert step > 0
    target = step + 6  # past at least one more epoch boundary

    def args(run, steps):
        values = tiny_fit_args(run, sources, steps=steps, extra=extra)
        values[values.index("--model.stable_steps") + 1] = "100000"  # the killed run's schedule
        return values

    resumed = run_cli([*args(killed, target), "--ckpt_path", "last"])
    straight = run_cli(args(tmp_path / "straight", target))
    assert resumed.trainer.global_step == straight.trainer.global_step == target
    for (name, a), (_, b) in zip(resumed.model.state_dict().items(), straight.model.state_dict().items()):
        assert torch.equal(a, b), f"{name} differs after the resume"
