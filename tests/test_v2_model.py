"""Toto 2.0 model behaviour beyond parity: checkpoints, the `toto2` drop-in paths, bf16 and input checks."""

import pytest
from partial_install import missing

# toto2 imports its GluonTS wrapper (toto.inference.toto2_gluonts), so it needs the boom extra.
pytest.importorskip("gluonts.torch", reason=missing("boom"))

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import toto2
from toto.v2 import Toto2Config, Toto2Model
from toto2.configuration import Toto2ModelConfig

FIXTURE = Path(__file__).parent / "fixtures" / "toto2" / "gqa"


def series(batch=2, variates=3, length=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    target = torch.randn(batch, variates, length, generator=g).cumsum(-1) * 10 + 100
    return {"target": target, "target_mask": torch.ones_like(target, dtype=torch.bool),
            "series_ids": torch.zeros(batch, variates, dtype=torch.long)}


def test_official_import_paths_are_ours():
    assert toto2.Toto2Model is Toto2Model and Toto2ModelConfig is Toto2Config
    model = toto2.Toto2Model.from_pretrained(str(FIXTURE))
    out = model.forecast(series(), 20, decode_block_size=None, has_missing_values=True)
    assert out.shape == (9, 2, 3, 20)
    assert bool((out.diff(dim=0) >= 0).all()), "quantiles are sorted along the level axis"


def test_save_pretrained_round_trips_in_the_official_layout(tmp_path):
    model = Toto2Model.from_pretrained(FIXTURE)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text()) == json.loads((FIXTURE / "config.json").read_text())
    assert load_file(tmp_path / "model.safetensors").keys() == load_file(FIXTURE / "model.safetensors").keys()
    again = Toto2Model.from_pretrained(tmp_path)
    torch.testing.assert_close(again.forecast(series(), 16), model.forecast(series(), 16), rtol=0, atol=0)


def test_sharded_checkpoint_loads_like_a_single_file(tmp_path):
    state = load_file(FIXTURE / "model.safetensors")
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[: len(keys) // 2],
              "model-00002-of-00002.safetensors": keys[len(keys) // 2 :]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, tmp_path / name)
    index = {"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    sharded, single = Toto2Model.from_pretrained(tmp_path), Toto2Model.from_pretrained(FIXTURE)
    torch.testing.assert_close(sharded.forecast(series(), 8), single.forecast(series(), 8), rtol=0, atol=0)


def test_missing_shard_is_named(tmp_path):
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    index = {"weight_map": {"patch_proj.linear1.weight": "model-00001-of-00002.safetensors"}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FileNotFoundError, match="model-00001-of-00002.safetensors is missing"):
        Toto2Model.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c.update(num_heads=0), "'num_heads' must be at least 1"),
        (lambda c: c.update(patch_size=None), "'patch_size' must not be null"),
        (lambda c: c.update(d_model="32"), "'d_model' must be int"),
        # Checked on the meta device against the weights: refused without allocating a 4096-wide model (3 GiB).
        (lambda c: c.update(d_model=4096, d_ff=None), "has shape"),
        # Larger than this machine's memory (800 GiB): refused on config.json alone (toto.checkpoint_io).
        (lambda c: c.update(d_model=65536, d_ff=None), "GiB of float32 weights, more than the"),
        (lambda c: c.update(residual_attn_ratio=None), "residual_attn_ratio must be set"),
        (lambda c: c.update(typo_field=1), "unknown Toto 2.0 config keys"),
        (lambda c: c.pop("variate_layer_first"), "missing Toto 2.0 config keys"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(tmp_path, edit, message):
    config = json.loads((FIXTURE / "config.json").read_text())
    edit(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    shutil.copy(FIXTURE / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match=message):
        Toto2Model.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda s: s.update({"patch_proj.linear1.weight": torch.full_like(s["patch_proj.linear1.weight"], torch.nan)}),
         "'patch_proj.linear1.weight' holds NaN"),
        (lambda s: s.update({"patch_proj.linear1.weight": s["patch_proj.linear1.weight"].to(torch.int8)}),
         "dtype torch.int8"),
        (lambda s: s.update({"patch_proj.linear1.weight": s["patch_proj.linear1.weight"][:, :4].contiguous()}),
         "has shape"),
        (lambda s: s.pop("transformer.out_norm.weight", None) or s.pop("patch_proj.linear1.bias"), "missing keys"),
    ],
)
def test_bad_weights_are_refused_with_the_key_named(tmp_path, corrupt, message):
    state = load_file(FIXTURE / "model.safetensors")
    corrupt(state)
    save_file(state, tmp_path / "model.safetensors")
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    with pytest.raises(ValueError, match=message):
        Toto2Model.from_pretrained(tmp_path)


def test_truncated_weights_name_the_file(tmp_path):
    shutil.copy(FIXTURE / "config.json", tmp_path / "config.json")
    (tmp_path / "model.safetensors").write_bytes((FIXTURE / "model.safetensors").read_bytes()[:100])
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        Toto2Model.from_pretrained(tmp_path)


def test_bfloat16_weights_keep_quantiles_close_to_float32():
    model = Toto2Model.from_pretrained(FIXTURE)
    inputs = series()
    inputs["target"] = inputs["target"] + 1000.0  # a level that bf16 alone would round to steps of 4
    reference = model.forecast(inputs, 24)
    low = model.to(torch.bfloat16).forecast(inputs, 24)
    assert low.dtype == torch.float32
    spread = inputs["target"].std(-1, keepdim=True)  # the series' scale
    assert float(((low - reference).abs() / spread).max()) < 0.05


def test_forecast_rejects_bad_shapes_and_block_sizes():
    model = Toto2Model.from_pretrained(FIXTURE)
    inputs = series()
    with pytest.raises(ValueError, match="multiple of patch_size"):
        model.forecast(inputs, 24, decode_block_size=5)
    with pytest.raises(ValueError, match=r"\(batch, variates, time\)"):
        model.forecast({**inputs, "series_ids": torch.zeros(2, dtype=torch.long)}, 24)
    with pytest.raises(ValueError, match="horizon must be at least 1"):
        model.forecast(inputs, 0)


def test_num_output_patches_above_one_forecasts_the_next_patch():
    """The official forecast fails for num_output_patches > 1; ours reads the first of the predicted patches."""
    model = Toto2Model(Toto2Config.tiny(patch_size=8, num_output_patches=2)).eval()
    out = model.forecast(series(), 20, decode_block_size=8)
    assert out.shape == (9, 2, 3, 20) and bool(torch.isfinite(out).all())


def test_sharded_hub_repo_loads_from_the_huggingface_cache_offline(tmp_path):
    """The real snapshot_download path, fed from a local cache laid out as the Hub client writes it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "cache" / "models--Datadog--Toto-2.0-22m"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    state = load_file(FIXTURE / "model.safetensors")
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[:10], "model-00002-of-00002.safetensors": keys[10:]}
    for name, part in shards.items():
        save_file({k: state[k] for k in part}, snapshot / name)
    index = {"weight_map": {k: name for name, part in shards.items() for k in part}}
    (snapshot / "model.safetensors.index.json").write_text(json.dumps(index))
    shutil.copy(FIXTURE / "config.json", snapshot / "config.json")
    model = Toto2Model.from_pretrained("Datadog/Toto-2.0-22m", cache_dir=tmp_path / "cache", local_files_only=True)
    torch.testing.assert_close(model.forecast(series(), 8), Toto2Model.from_pretrained(FIXTURE).forecast(series(), 8))
    with pytest.raises(OSError, match="could not get 'Datadog/Toto-2.0-4m' from the Hugging Face Hub"):
        Toto2Model.from_pretrained("Datadog/Toto-2.0-4m", cache_dir=tmp_path / "cache", local_files_only=True)
