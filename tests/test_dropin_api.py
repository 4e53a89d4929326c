"""Toto 1.0 call forms beyond its own test suite: positional constructors, label fine-tuning switch, custom
backbones driven through the official interface, and ordinary (not inference) tensors."""

import pytest
import torch

from toto import MaskedTimeseries, Toto, TotoConfig, TotoForecaster
from toto.model.backbone import TotoBackbone
from toto.model.util import KVCache

SCALER = "<class 'model.scaler.CausalPatchStdMeanScaler'>"
MIXTURE = ["<class 'model.distribution.MixtureOfStudentTsOutput'>"]


def test_positional_constructor_in_official_order_builds_the_same_model():
    by_position = Toto(8, 8, 32, 2, 2, 64, 0.0, 2, SCALER, MIXTURE, True, {"k_components": 2})
    by_keyword = Toto(patch_size=8, stride=8, embed_dim=32, num_layers=2, num_heads=2, mlp_hidden_dim=64,
                      dropout=0.0, spacewise_every_n_layers=2, scaler_cls=SCALER,
                      output_distribution_classes=MIXTURE, output_distribution_kwargs={"k_components": 2})
    assert by_position.config == by_keyword.config
    assert TotoBackbone(8, 8, 32, 2, 2, 64, 0.0, 2, SCALER, MIXTURE).config.embed_dim == 32
    with pytest.raises(TypeError, match="both by position and by keyword"):
        Toto(8, 8, 32, patch_size=8)


def test_enable_variate_labels_adds_label_tokens_that_are_saved(tmp_path):
    model = Toto(TotoConfig.tiny())
    model.model.enable_variate_labels()
    assert model.config.use_variate_labels and model.model.num_prepended_tokens == 1
    model.save_pretrained(tmp_path)
    again = Toto.from_pretrained(tmp_path)
    torch.testing.assert_close(again.model.target_variate_label, model.model.target_variate_label)


def test_official_kv_cache_constructor_and_lengths():
    backbone = Toto(TotoConfig.tiny()).model.eval()
    cache = KVCache(batch_size=1, num_variates=2, transformer_layers=list(backbone.transformer.layers),
                    num_layers=backbone.num_layers, embed_dim=backbone.embed_dim, num_heads=4, max_seq_len=8)
    x = torch.randn(1, 2, 64)
    with torch.no_grad():
        backbone(x, torch.ones_like(x, dtype=torch.bool), torch.zeros_like(x), cache)
    assert cache.current_len(0) == cache.seq_len(1) == len(cache) == 4
    cache.reset()
    assert cache.current_len(0) == 0


class ScaledBackbone(torch.nn.Module):
    """A custom model with Toto 1.0's call interface: a Toto backbone whose distribution is shifted by +100."""

    def __init__(self, inner: TotoBackbone) -> None:
        super().__init__()
        self.inner, self.patch_embed = inner, inner.patch_embed

    def allocate_kv_cache(self, **kwargs):
        return None

    def forward(self, inputs, input_padding_mask, id_mask, kv_cache=None, scaling_prefix_length=None,
                num_exogenous_variables=0):
        out = self.inner(inputs, input_padding_mask, id_mask, None, scaling_prefix_length, num_exogenous_variables)
        return out.distribution, out.loc + 100.0, out.scale


def test_any_model_with_the_official_interface_is_decoded_by_toto_1_loop():
    torch.manual_seed(0)
    inner = Toto(TotoConfig.tiny()).model.eval()
    inputs = MaskedTimeseries.from_series(torch.sin(torch.arange(96.0) / 5)[None] * 3 + 10)
    ours = TotoForecaster(inner).forecast(inputs, 20, use_kv_cache=False).mean
    custom = TotoForecaster(ScaledBackbone(inner)).forecast(inputs, 20, use_kv_cache=True)
    assert custom.mean.shape == (1, 1, 20) and float(custom.mean[0, 0, 0] - ours[0, 0, 0]) == pytest.approx(100, abs=1)
    sampled = TotoForecaster(ScaledBackbone(inner)).forecast(inputs, 20, num_samples=6, samples_per_batch=4)
    assert sampled.samples.shape == (1, 1, 20, 6)


def test_forecasts_are_ordinary_tensors():
    forecast = TotoForecaster(Toto(TotoConfig.tiny()).model).forecast(
        MaskedTimeseries.from_series(torch.randn(2, 64)), 16, num_samples=4)
    forecast.samples.clamp_(min=0)
    forecast.mean.add_(1)
    assert not forecast.samples.is_inference() and not forecast.samples.requires_grad
