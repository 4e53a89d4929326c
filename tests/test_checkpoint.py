import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from partial_install import missing
from safetensors.torch import load_file, save_file

from toto import Toto, TotoConfig
from toto.checkpoint_io import embedded_models

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def tiny(tmp_path):
    torch.manual_seed(0)
    model = Toto(TotoConfig.tiny())
    return model, model.save_pretrained(tmp_path / "tiny")


def test_save_and_load_round_trip(tiny):
    model, folder = tiny
    loaded = Toto.from_pretrained(folder)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    config = json.loads((folder / "config.json").read_text())
    assert "use_variate_labels" not in config  # plain Toto 1.0 keys only, so the official package loads it too


def test_fused_swiglu_key_layout_and_stored_rotary_buffers_are_accepted(tiny, tmp_path):
    model, folder = tiny
    state = load_file(folder / "model.safetensors")
    fused = {}
    for key, value in state.items():
        key = key.replace(".mlp.0.", ".mlp.0.w12.").replace(".mlp.2.", ".mlp.0.w3.")
        fused[key] = value
    fused["model.transformer.rotary_emb.freqs"] = torch.zeros(8)
    assert any(".w12." in k for k in fused)
    other = tmp_path / "fused"
    other.mkdir()
    (other / "config.json").write_text((folder / "config.json").read_text())
    save_file(fused, other / "model.safetensors")
    loaded = Toto.from_pretrained(other)
    assert torch.equal(loaded.state_dict()["model.transformer.layers.0.mlp.2.weight"],
                       model.state_dict()["model.transformer.layers.0.mlp.2.weight"])


def test_missing_and_unexpected_keys_are_reported(tiny):
    _, folder = tiny
    state = load_file(folder / "model.safetensors")
    state.pop("model.unembed.bias")
    state["model.extra.weight"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=r"missing keys: \['model.unembed.bias'\].*unexpected keys: \['model.extra"):
        Toto.from_pretrained(folder)
    Toto.from_pretrained(folder, strict=False)  # loads, with a warning


def test_pickle_checkpoints_only_load_as_plain_tensors(tiny, tmp_path):
    model, folder = tiny
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), plain / "pytorch_model.bin")
    with pytest.warns(UserWarning, match="weights_only=True"):
        Toto.from_pretrained(plain)

    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((folder / "config.json").read_text())
    torch.save({"state_dict": model.state_dict(), "payload": subprocess.Popen}, evil / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle code is never executed"), pytest.warns(UserWarning):
        Toto.from_pretrained(evil)


def test_hub_repo_loads_from_the_huggingface_cache_offline(tiny, tmp_path):
    """The real hf_hub_download path, fed from a local cache laid out as the Hub client writes it."""
    _, folder = tiny
    repo = tmp_path / "cache" / "models--Datadog--Toto-Open-Base-1.0"
    commit = "0" * 40
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name in ("config.json", "model.safetensors"):
        (snapshot / name).write_bytes((folder / name).read_bytes())
    model = Toto.from_pretrained("Datadog/Toto-Open-Base-1.0", cache_dir=tmp_path / "cache", local_files_only=True)
    assert model.config == TotoConfig.tiny()


@pytest.mark.integration
def test_unreachable_hub_error_names_repo_and_local_folder_workaround(tmp_path):
    code = ("from toto import Toto\n"
            "try:\n    Toto.from_pretrained('Datadog/Toto-Open-Base-1.0')\n"
            "except OSError as e:\n    print(e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "Datadog/Toto-Open-Base-1.0" in out and "--local-dir" in out and "from_pretrained('DIR')" in out


def test_unknown_name_and_bad_config_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="embedded model name"):
        Toto.from_pretrained("./does-not-exist")
    with pytest.raises(ValueError, match="unknown Toto config keys"):
        TotoConfig.from_dict({"patch_size": 16, "patchsize": 16})


def test_embedded_model_loads_offline_by_name(toto_tiny):
    assert "toto-tiny" in embedded_models()
    model = toto_tiny.model  # loaded by name, offline, once per run (tests/conftest.py)
    assert isinstance(model, Toto) and model.name_or_path == "toto-tiny" and not model.training


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", r"model\.safetensors is not a readable safetensors file .*truncated or corrupt"),
        ("empty", r"model\.safetensors is empty"),
        ("random", r"model\.safetensors is not a readable safetensors file"),
    ],
)
def test_damaged_weights_file_is_named(tiny, damage, message):
    _, folder = tiny
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                         "random": os.urandom(len(data))}[damage])
    with pytest.raises(ValueError, match=message) as error:
        Toto.from_pretrained(folder)
    assert str(weights) in str(error.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ([1, 2, 3], r"config\.json must be a JSON object of config fields, got a list"),
        ({"embed_dim": "128"}, r"config\.json: 'embed_dim' must be int, got '128' \(str\)"),
        ({"num_heads": 0}, r"config\.json: 'num_heads' must be at least 1, got 0"),
        ({"patch_size": None}, r"config\.json: 'patch_size' must not be null"),
        ({"patch_size": -16, "stride": -16}, r"config\.json: 'patch_size' must be at least 1, got -16"),
        ({"dropout": True}, r"config\.json: 'dropout' must be int or number, got True"),
        ({"output_distribution_kwargs": {"k_components": 0}}, r"k_components' must be a positive integer"),
    ],
)
def test_bad_config_values_are_named_with_the_file(tiny, config, message):
    _, folder = tiny
    if isinstance(config, list):
        (folder / "config.json").write_text(json.dumps(config))
    else:
        _edit_config(folder, **config)
    with pytest.raises(ValueError, match=message) as error:
        Toto.from_pretrained(folder)
    assert str(folder / "config.json") in str(error.value)


def test_config_json_that_is_not_json_is_named(tiny):
    _, folder = tiny
    (folder / "config.json").write_text("{'patch_size': 16,")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        Toto.from_pretrained(folder)


@pytest.mark.parametrize(
    ("summary", "message"),
    [
        ('{"context_length": 1}', r"context_length must be an integer of at least 3, got 1"),
        ('{"default_context_length": "long"}', r"default_context_length must be an integer of at least 3, got 'long'"),
        ('{"context_length": 96.5}', r"context_length must be an integer of at least 3, got 96\.5"),
        ('{"context_ensemble": [1, 512]}', r"context_ensemble must be a list of integers of at least 3, got \[1, 51"),
        ('{"context_ensemble": "wide"}', r"context_ensemble must be a list of integers of at least 3, got 'wide'"),
        ("[96]", r"must be a JSON object, got a list"),
        ("{'context_length': 96", r"is not valid JSON"),
    ],
)
def test_bad_training_summary_is_named_with_the_file_and_the_field(tiny, summary, message, capsys):
    """The fields of training_summary.json that set a pipeline's defaults are checked where the file is read: a bad
    one names the file and the field, rather than a setting the caller never gave ("context_length must be >= 3"),
    and a broken file is not silently taken for none."""
    pytest.importorskip("pandas", reason=missing("cli"))
    from toto.cli import main as toto_main
    from toto.pipeline import ForecastPipeline
    from toto.validation import InputError

    _, folder = tiny
    path = folder / "training_summary.json"
    path.write_text(summary)
    expected = re.escape(str(path)) + r":? " + message
    with pytest.raises(InputError, match=expected):
        ForecastPipeline.from_pretrained(folder)
    with pytest.raises(SystemExit) as exit_info:
        toto_main(["forecast", str(EXAMPLES / "electricity_demand.csv"), "-p", "8", "-c", str(folder),
                   "-o", str(folder.parent / "forecast.csv")])
    assert exit_info.value.code == 2
    assert re.search(expected, capsys.readouterr().err)


def test_absurd_embed_dim_fails_on_the_weights_before_allocating(tiny):
    import resource

    _, folder = tiny
    # 2.3 GiB of weights: within this machine's memory (larger configs are refused on their size alone,
    # tests/test_cli.py), but far from these weights.
    _edit_config(folder, embed_dim=6144)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    with pytest.raises(ValueError, match=r"model\.safetensors: weight '.*' has shape .* but the config needs .*6144"):
        Toto.from_pretrained(folder)
    grown_gib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 2**20
    assert grown_gib < 1, f"loading grew the process by {grown_gib:.1f} GiB"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("shape", r"weight 'model\.unembed\.weight' has shape \(3, 5\) but the config needs"),
        ("nan", r"weight 'model\.unembed\.weight' holds NaN or infinite values"),
        ("int8", r"weight 'model\.unembed\.weight' has dtype torch\.int8; Toto weights are floating point"),
    ],
)
def test_wrong_shapes_nan_and_integer_weights_name_file_and_key(tiny, change, message):
    _, folder = tiny
    state = load_file(folder / "model.safetensors")
    weight = state["model.unembed.weight"]
    state["model.unembed.weight"] = {
        "shape": torch.zeros(3, 5), "nan": torch.full_like(weight, float("nan")),
        "int8": weight.to(torch.int8),
    }[change]
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ValueError, match=message) as error:
        Toto.from_pretrained(folder)
    assert str(folder / "model.safetensors") in str(error.value)
