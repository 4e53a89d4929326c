"""The training objective, the learning-rate schedule, and skipping non-finite steps in a real Trainer."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import itertools

import lightning as L
import numpy as np
import torch
from train_fixtures import TINY_MODEL  # noqa: F401

from train.datamodule import TotoDataModule
from train.losses import TotoLoss, robust_loss
from train.module import TotoModule
from train.schedule import wsd_learning_rate
from train.sources import SeriesRecord, SyntheticSource


def test_robust_loss_special_cases():
    x = torch.linspace(-3, 3, 13)
    torch.testing.assert_close(robust_loss(x, 2.0, 0.1), 0.5 * (x / 0.1) ** 2)
    torch.testing.assert_close(robust_loss(x, 0.0, 0.1), torch.log1p(0.5 * (x / 0.1) ** 2))
    # The general formula tends to the special cases.
    torch.testing.assert_close(robust_loss(x, 1e-4, 0.1), robust_loss(x, 0.0, 0.1), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(robust_loss(x, 1.0, 1.0), torch.sqrt(x**2 + 1) - 1)  # pseudo-Huber
    with pytest.raises(ValueError):
        robust_loss(x, 2.5, 0.1)


def test_combined_loss_weights_nll_and_robust_terms():
    distribution = torch.distributions.StudentT(torch.tensor(3.0), torch.tensor(0.5), torch.tensor(2.0))
    target = torch.tensor(1.7)
    nll = -distribution.log_prob(target)
    robust = torch.log1p(torch.tensor(0.5 * ((0.5 - 1.7) / 0.1) ** 2))
    torch.testing.assert_close(TotoLoss()(distribution, target), 0.575 * nll + 0.425 * robust)
    torch.testing.assert_close(TotoLoss(nll_weight=1.0)(distribution, target), nll)


def test_warmup_stable_decay_schedule():
    lrs = [wsd_learning_rate(s, 1e-3, 1e-5, 10, 20, 10) for s in range(45)]
    assert lrs[0] == 1e-5 and lrs[5] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5))
    assert lrs[10:30] == [1e-3] * 20
    assert lrs[30] == 1e-3 and all(a > b for a, b in itertools.pairwise(lrs[30:41]))
    assert lrs[34] == pytest.approx(1e-5 + (1e-3 - 1e-5) * (1 - np.sqrt(0.4)))
    assert lrs[40:] == [1e-5] * 5


class _WithOverflow(SyntheticSource):
    """Clean series plus one whose values overflow float32 arithmetic (squares of 1e30): a corrupted metric."""

    def load(self):
        return super().load() + [SeriesRecord("corrupt", np.full((1, 300), 3e37, np.float32))]


def test_non_finite_steps_are_skipped_and_counted(tmp_path):
    torch.manual_seed(0)
    data = TotoDataModule([_WithOverflow(num_series=3, length=300)], context_length=64, patch_size=8,
                          val_length=16, batch_size=2, max_val_series=2)
    module = TotoModule(model_config=TINY_MODEL, lr=1e-3, warmup_steps=1)
    trainer = L.Trainer(max_steps=12, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 12
    assert 0 < module.nonfinite_steps < 12
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert trainer.callback_metrics["nonfinite_steps"] == module.nonfinite_steps
