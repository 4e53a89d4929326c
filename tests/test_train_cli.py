"""`toto-train` through the real LightningCLI: fitting lowers the validation loss, configs parse, runs leave their
artifacts (checkpoints, loss curve, export)."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import csv
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
from train_fixtures import (  # noqa: F401
    CONFIGS,
    REPO,
    table_source,
    tiny_fit_args,
    write_co2_csv,
    write_real_series_folder,
)

from train.cli import main, run_cli


@pytest.mark.integration
def test_fit_lowers_validation_loss_on_seasonal_series(tmp_path):
    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]
    args = tiny_fit_args(tmp_path / "run", sources, steps=60)
    before = run_cli(["validate", *args[1:]]).trainer.callback_metrics["val_loss"].item()
    cli = run_cli(args)
    after = cli.trainer.callback_metrics["val_loss"].item()
    assert cli.trainer.global_step == 60
    assert after < before - 0.3, (before, after)
    rows = list(csv.DictReader((tmp_path / "run" / "loss_curve.csv").read_text().splitlines()))
    assert [int(r["step"]) for r in rows if r["train_loss"] != "nan"] == list(range(1, 61))
    assert float(rows[-1]["val_loss"]) == pytest.approx(after, rel=1e-5)
    assert (tmp_path / "run" / "loss_curve.png").stat().st_size > 1000
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    assert (tmp_path / "run" / "export" / "model.safetensors").is_file()


@pytest.mark.integration
def test_pretrain_tiny_mixes_synthetic_and_real_series(tmp_path):
    folder = write_real_series_folder(tmp_path / "real")
    sources = [
        {"class_path": "train.sources.SyntheticSource", "init_args": {"num_series": 50, "length": 512, "weight": 3.0}},
        table_source(folder, multivariate=False, weight=1.0),
    ]
    cli = run_cli(tiny_fit_args(tmp_path / "run", sources, steps=3))
    data = cli.datamodule
    assert [len(records) for records in data.train_dataset.sources] == [50, 3]
    assert data.train_dataset.weights.tolist() == [0.75, 0.25]
    assert cli.trainer.global_step == 3
    assert (tmp_path / "run" / "loss_curve.csv").is_file()
    assert (tmp_path / "run" / "export" / "config.json").is_file()


@pytest.mark.parametrize(
    "configs, expected",
    [
        (["finetune.yaml"], ["pretrained: Datadog/Toto-Open-Base-1.0", "nll_weight: 0.575", "robust_delta: 0.1",
                             "eps: 1.0e-07", "weight_decay: 0.01", "- 0.999"]),
        (["finetune-exogenous.yaml"], ["use_variate_labels: true", "- deploys"]),
        (["pretrain-tiny.yaml"], ["embed_dim: 128", "class_path: train.sources.SyntheticSource"]),
        (["pretrain-tiny-v2-stage2.yaml"],
         ["pretrained: runs/pretrain-tiny-v2/export", "class_path: train.sources.RepeatingProfileSource"]),
        (["pretrain-base.yaml", "strategy/ddp.yaml"], ["embed_dim: 768", "strategy: ddp", "precision: bf16-mixed"]),
        (["pretrain-base.yaml", "strategy/fsdp.yaml"],
         ["FSDPStrategy", "- toto.model.transformer.TransformerLayer", "state_dict_type: full", "bf16-mixed"]),
        (["finetune.yaml", "strategy/gpu.yaml"], ["accelerator: gpu", "bf16-mixed"]),
    ],
)
def test_shipped_configs_parse(configs, expected, capsys):
    args = ["fit"] + [a for c in configs for a in ("--config", str(CONFIGS / c))]
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--model.lr", "2e-4", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    for text in [*expected, "lr: 0.0002"]:
        assert text in printed, text


def test_fsdp_wraps_the_transformer_layers_of_both_models():
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import FSDPStrategy

    from toto.model.transformer import TransformerLayer
    from toto.v2.transformer import TransformerLayer as V2TransformerLayer

    parser = ArgumentParser()
    parser.add_class_arguments(FSDPStrategy, "strategy")
    init_args = yaml.safe_load((CONFIGS / "strategy" / "fsdp.yaml").read_text())["trainer"]["strategy"]["init_args"]
    strategy = parser.instantiate(parser.parse_object({"strategy": init_args})).strategy
    assert strategy.kwargs["auto_wrap_policy"]._module_classes == {TransformerLayer, V2TransformerLayer}


def _bad_table(kind: str, path) -> None:
    hours = pd.date_range("2024-01-01", periods=300, freq="h")
    frames = {
        "all_nan": pd.DataFrame({"timestamp": hours, "cpu": np.nan}),
        "one_row": pd.DataFrame({"timestamp": hours[:1], "cpu": [1.0]}),
        "text": pd.DataFrame({"timestamp": hours, "cpu": "high"}),
        "too_short": pd.DataFrame({"timestamp": hours[:20], "cpu": np.arange(20.0)}),
    }
    frames[kind].to_csv(path, index=False)


@pytest.mark.parametrize("kind, reason", [
    ("all_nan", r"{file}: column\(s\) \['cpu'\] have no values"),
    ("one_row", r"{file}: only 1 time step\(s\); at least 3 are needed"),
    ("text", r"{file}: no numeric column"),
    ("too_short", r"TableSource \({file}\) has no series of at least 32 steps; lower data.val_length"),
], ids=["all_nan", "one_row", "text", "too_short"])
def test_a_table_that_cannot_be_trained_on_is_a_one_line_error(kind, reason, tmp_path, capfd):
    """Data that cannot be trained on is the user's to fix: one line naming the file and the reason, exit status 2,
    no traceback (the message used to sit at the bottom of chained tracebacks)."""
    path = tmp_path / f"{kind}.csv"
    _bad_table(kind, path)
    with pytest.raises(SystemExit) as exit_info:
        main(tiny_fit_args(tmp_path / "run", [table_source(path)], steps=2))
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert re.fullmatch(r"toto-train fit: error: " + reason.format(file=re.escape(str(path))) + ".*", last), last


@pytest.mark.integration
def test_an_unreachable_hub_checkpoint_says_in_one_line_what_to_pass_instead(tmp_path):
    """The README's command without Hub access: one line saying what failed and the flag to pass instead (a local
    folder or the embedded model), exit status 2. HF_HUB_OFFLINE=1 makes the Hub fail at once, as it does offline
    after its connection attempts."""
    csv_path = write_co2_csv(tmp_path / "co2.csv")
    command = [sys.executable, "-m", "train.cli", "fit", "--config", str(CONFIGS / "finetune.yaml"),
               "--model.pretrained", "open-toto-tests/no-such-model", "--data.sources.init_args.path", str(csv_path),
               "--trainer.default_root_dir", str(tmp_path / "run")]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("toto-train fit: error: --model.pretrained 'open-toto-tests/no-such-model': could not get"
                           " it from the Hugging Face Hub"), last
    assert "--model.pretrained DIR" in last and "--model.pretrained toto-tiny" in last
    assert "from_pretrained(" not in done.stderr


@pytest.mark.integration
def test_fine_tuning_prints_steps_of_max_steps_and_no_lightning_tips(tmp_path, capfd, caplog):
    """The progress bar counts optimizer steps out of trainer.max_steps (Lightning's own read "Epoch 0/-2" with
    max_epochs -1), and Lightning's advertisements (litlogger, litmodels) are not printed."""
    sources = [table_source(write_co2_csv(tmp_path / "co2.csv"))]
    main(tiny_fit_args(tmp_path / "run", sources, steps=3, extra=["--trainer.enable_progress_bar", "true"]))
    captured = capfd.readouterr()
    printed = captured.out + captured.err + caplog.text  # under pytest, Lightning's log lines go to caplog
    assert "Tip:" not in printed and "litlogger" not in printed and "litmodels" not in printed
    assert "/-2" not in printed
    assert re.search(r"step\s*:?\s*100%.*\b3/3\b", printed), printed[-2000:]


def test_export_without_a_checkpoint_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == (f"toto-train export: error: no checkpoint at {tmp_path / 'last.ckpt'}:"
                                               " give a .ckpt file, or a run folder whose checkpoints/ holds last.ckpt")
