"""`toto-train` through the real LightningCLI: fitting lowers the validation loss, configs parse, runs leave their
artifacts (checkpoints, loss curve, export)."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import csv

from train_fixtures import (  # noqa: F401
    CONFIGS,
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
