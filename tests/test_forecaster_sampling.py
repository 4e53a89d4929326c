"""Decoding mechanics of TotoForecaster: seeded streams per (series, path), the shared-prefix attention, mixture
sampling, covariate layout, variate labels with left padding, bf16 weights, memory budget, cancellation, quantiles."""

import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from toto import MaskedTimeseries, Toto, TotoConfig, TotoForecaster
from toto.inference.cancel import ForecastCancelled
from toto.inference.covariates import model_layout, shift_exogenous
from toto.inference.forecaster import Forecast
from toto.inference.memory import MemoryBudgetExceeded, plan_forecast
from toto.inference.streams import PathStreams, row_seeds
from toto.model.attention_math import attend_shared_prefix
from toto.model.distribution import UNIFORMS_PER_VALUE, disc_point, student_t_from_polar


def seasonal(length: int, variates: int = 2, seed: int = 0, level: float = 10.0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    rows = [level + 3 * np.sin(2 * np.pi * t / 24 + v) + rng.normal(0, 0.3, length) for v in range(variates)]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def ragged(lengths: list[int], variates: int = 2, level: float = 10.0) -> torch.Tensor:
    """Series of different lengths, left-padded with NaN to the longest."""
    batch = torch.full((len(lengths), variates, max(lengths)), float("nan"))
    for i, length in enumerate(lengths):
        batch[i, :, -length:] = seasonal(length, variates, seed=i, level=level)
    return batch


@pytest.fixture(scope="module")
def forecaster() -> TotoForecaster:
    torch.manual_seed(0)
    return TotoForecaster(Toto(TotoConfig.tiny()).model)


def test_seeded_samples_do_not_depend_on_batch_or_chunking(forecaster):
    lengths = [40 + 7 * i for i in range(16)]
    batch = ragged(lengths)
    seeds = list(range(100, 116))
    together = forecaster.forecast(MaskedTimeseries.from_series(batch), 20, num_samples=256, seed=seeds).samples
    assert together.shape == (16, 2, 20, 256)
    for i in (0, 5, 15):
        alone = forecaster.forecast(MaskedTimeseries.from_series(batch[i:i + 1, :, -lengths[i]:]), 20,
                                    num_samples=256, seed=[seeds[i]]).samples
        torch.testing.assert_close(alone[0], together[i], rtol=1e-4, atol=1e-4)
    chunked = forecaster.forecast(MaskedTimeseries.from_series(batch[:3]), 20, num_samples=256, samples_per_batch=7,
                                  seed=seeds[:3]).samples
    torch.testing.assert_close(chunked, together[:3], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(together[0], together[1, :, :, :])


def test_shared_prefix_attention_equals_attention_over_the_copied_context():
    torch.manual_seed(0)
    rows, heads, context, dim, paths, own = 3, 2, 7, 8, 5, 4
    prefix_k, prefix_v = torch.randn(rows, heads, context, dim), torch.randn(rows, heads, context, dim)
    valid = torch.rand(rows, context) > 0.3
    valid[:, -1] = True
    own_k, own_v = torch.randn(paths * rows, heads, own, dim), torch.randn(paths * rows, heads, own, dim)
    q = torch.randn(paths * rows, heads, 1, dim)
    merged = attend_shared_prefix(q, prefix_k, prefix_v, valid, own_k, own_v, paths)
    keys = torch.cat([prefix_k.repeat(paths, 1, 1, 1), own_k], dim=2)
    values = torch.cat([prefix_v.repeat(paths, 1, 1, 1), own_v], dim=2)
    mask = torch.cat([valid.repeat(paths, 1), torch.ones(paths * rows, own, dtype=torch.bool)], dim=1)
    reference = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask[:, None, None, :])
    torch.testing.assert_close(merged, reference, rtol=1e-5, atol=1e-6)
    # Every context key valid: no mask is needed (None), and the numbers are those of an all-true mask.
    every = torch.ones_like(valid)
    without_mask = attend_shared_prefix(q, prefix_k, prefix_v, None, own_k, own_v, paths)
    torch.testing.assert_close(without_mask, attend_shared_prefix(q, prefix_k, prefix_v, every, own_k, own_v, paths))
    assert not torch.allclose(without_mask, merged, atol=1e-3)


def test_disc_point_gives_student_t_with_two_uniforms():
    torch.manual_seed(0)
    for df in (2.5, 3.5, 30.0):
        u, w = disc_point(torch.rand(200_000, UNIFORMS_PER_VALUE - 1))
        assert bool(((w > 0) & (w <= 1)).all())
        draws = student_t_from_polar(u, w, torch.full((200_000,), df)).numpy()
        assert stats.kstest(draws, stats.t(df=df).cdf).pvalue > 0.01


def test_path_streams_are_uniform_independent_and_do_not_depend_on_how_they_are_drawn():
    streams = PathStreams(row_seeds(0, 64), first_path=0, paths=64)  # 4,096 streams, keys from nearby seeds
    numbers = streams.uniforms(256).double()
    assert numbers.min() >= 0 and numbers.max() < 1
    assert stats.kstest(numbers.flatten().numpy(), "uniform").pvalue > 0.01
    # Neighbouring streams and neighbouring numbers of a stream are uncorrelated (|r| ~ 1/sqrt(n) = 0.004).
    centred = numbers - 0.5
    assert abs(float((centred[:-1] * centred[1:]).mean() / centred.var())) < 0.02
    assert abs(float((centred[:, :-1] * centred[:, 1:]).mean() / centred.var())) < 0.02
    # No stream repeats another's numbers, shifted or not.
    assert len(set(numbers[:, :8].flatten().tolist())) > 0.99 * numbers[:, :8].numel()
    # Drawn in one go or in pieces, and decoded with other paths or alone, a stream gives the same numbers.
    pieces = PathStreams(row_seeds(0, 64), first_path=0, paths=64)
    assert torch.equal(torch.cat([pieces.uniforms(100), pieces.uniforms(156)], dim=-1), numbers.float())
    alone = PathStreams(row_seeds(0, 64)[5:6], first_path=3, paths=1)
    assert torch.equal(alone.uniforms(256)[0], numbers[3 * 64 + 5].float())


def test_mixture_sampling_matches_the_mixture_distribution(forecaster):
    """The drawn component + its Student-T gives the mixture: compare with torch's MixtureSameFamily, built from
    the same projections; and the mean from the projections is the distribution's mean."""
    model = forecaster.model
    hidden = torch.randn(1, 1, 1, model.embed_dim)
    with torch.no_grad():
        raw = model.head_projections(hidden, 1)
        distribution = model.output_distribution.from_projected(raw)
    torch.testing.assert_close(model.output_distribution.mean_from_projected(raw), distribution.mean)
    torch.manual_seed(1)
    unseeded = forecaster._draw(model.output_distribution, raw, 20_000, True, None).flatten().numpy()
    rows = raw.expand(20_000, 1, 1, -1)  # one stream per row
    seeded = forecaster._draw(model.output_distribution, rows, 1, True, PathStreams(list(range(20_000)), 0, 1))
    reference = distribution.sample((20_000,)).flatten().numpy()
    assert stats.ks_2samp(unseeded, reference).pvalue > 0.01
    assert stats.ks_2samp(seeded.flatten().numpy(), reference).pvalue > 0.01


def test_aligned_covariates_are_laid_out_as_in_training_and_only_targets_return(forecaster):
    patch = forecaster.model.patch_size
    target, covariate = seasonal(80, 1)[0], torch.arange(80, dtype=torch.float32)
    future = torch.arange(80, 100, dtype=torch.float32).view(1, 1, 20)
    aligned = MaskedTimeseries.from_series(torch.stack([target, covariate]), num_exogenous_variables=1)
    forecast = forecaster.forecast(aligned, 20, num_samples=8, future_exogenous_variables=future, seed=0,
                                   exogenous_layout="aligned")
    assert forecast.samples.shape == (1, 1, 20, 8) and forecast.mean.shape == (1, 1, 20)
    # The same forecast through Toto 1.0's contract: covariates shifted by the caller, every variate returned.
    context, shifted_future = model_layout(covariate.view(1, 1, 80), future, 80, patch)
    manual = MaskedTimeseries.from_series(torch.cat([target.view(1, 1, 80), context], dim=1), num_exogenous_variables=1)
    official = forecaster.forecast(manual, 20, num_samples=8, future_exogenous_variables=shifted_future, seed=0)
    assert official.samples.shape == (1, 2, 20, 8)
    torch.testing.assert_close(forecast.samples[:, 0], official.samples[:, 0])
    # Training windows read the covariate of step t + patch at step t: the same layout.
    np.testing.assert_array_equal(shift_exogenous(covariate.view(1, 80).numpy(), patch)[:, : 80 - patch],
                                  context[0, :, : 80 - patch].numpy())


def test_variate_labels_do_not_count_as_observed_leading_patches():
    torch.manual_seed(0)
    model = Toto(TotoConfig.tiny(use_variate_labels=True)).model.eval()
    forecaster = TotoForecaster(model)
    lengths = [48, 130, 75]
    batch = ragged(lengths, variates=3)
    future = torch.randn(3, 1, 20)
    seeds = [5, 6, 7]
    together = forecaster.forecast(MaskedTimeseries.from_series(batch, num_exogenous_variables=1), 20,
                                   num_samples=16, future_exogenous_variables=future, seed=seeds)
    for i, length in enumerate(lengths):
        own = MaskedTimeseries.from_series(batch[i:i + 1, :, -length:], num_exogenous_variables=1)
        alone = forecaster.forecast(own, 20, num_samples=16, future_exogenous_variables=future[i:i + 1],
                                    seed=[seeds[i]])
        torch.testing.assert_close(alone.samples[0], together.samples[i], rtol=1e-4, atol=1e-4)
        # Also without a KV cache (the label is then inserted at every step).
        mean = forecaster.forecast(own, 20, future_exogenous_variables=future[i:i + 1], use_kv_cache=False).mean
        batched = forecaster.forecast(MaskedTimeseries.from_series(batch, num_exogenous_variables=1), 20,
                                      future_exogenous_variables=future, use_kv_cache=False).mean
        torch.testing.assert_close(mean[0], batched[i], rtol=1e-4, atol=1e-4)


def test_bf16_weights_keep_series_scaler_and_sampling_in_float32():
    torch.manual_seed(0)
    model = Toto(TotoConfig.tiny()).model.eval()
    series = seasonal(128, 2, level=1000.0)
    inputs = MaskedTimeseries.from_series(series)
    full = TotoForecaster(model).forecast(inputs, 24, num_samples=64, seed=0)
    half = TotoForecaster(model.to(torch.bfloat16)).forecast(inputs, 24, num_samples=64, seed=0)
    assert half.samples.dtype == torch.float32 and half.mean.dtype == torch.float32
    # bf16 holds 1000 only in steps of 4 (8 bits of mantissa); float32 sampling keeps the fine values.
    assert float((half.samples.remainder(4.0) != 0).float().mean()) > 0.9
    assert float(((half.mean - full.mean).abs() / full.mean.abs()).max()) < 0.01
    _, loc, scale, _ = model.scale(series[None], torch.ones_like(series[None], dtype=torch.bool))
    assert loc.dtype == scale.dtype == torch.float32


def test_memory_budget_sets_the_chunks_and_refuses_what_can_never_fit(forecaster):
    config = forecaster.model.config
    plan = plan_forecast(config, 2, 2, 100, 20, 64, budget_bytes=1 << 30)
    assert plan.paths_per_chunk == 64
    small = plan.fixed_bytes + plan.output_bytes + 5 * plan.per_path_bytes
    assert plan_forecast(config, 2, 2, 100, 20, 64, budget_bytes=small).paths_per_chunk == 5
    with pytest.raises(MemoryBudgetExceeded, match="memory_budget_bytes"):
        plan_forecast(config, 2, 2, 100, 20, 64, budget_bytes=plan.fixed_bytes)
    inputs = MaskedTimeseries.from_series(ragged([100, 90]))
    budgeted = TotoForecaster(forecaster.model, memory_budget_bytes=small).forecast(inputs, 20, num_samples=64, seed=3)
    unbounded = forecaster.forecast(inputs, 20, num_samples=64, seed=3)
    torch.testing.assert_close(budgeted.samples, unbounded.samples)
    with pytest.raises(MemoryBudgetExceeded):
        TotoForecaster(forecaster.model, memory_budget_bytes=1000).forecast(inputs, 20, num_samples=64)


def test_cancellation_stops_between_decoding_steps(forecaster):
    inputs = MaskedTimeseries.from_series(seasonal(64))
    event = threading.Event()
    event.set()
    with pytest.raises(ForecastCancelled):
        forecaster.forecast(inputs, 64, num_samples=4, cancel=event)
    calls = []
    with pytest.raises(ForecastCancelled):
        forecaster.forecast(inputs, 64, num_samples=4, cancel=lambda: calls.append(1) or len(calls) > 2)
    assert len(calls) == 3  # two decoding steps ran, the third was refused


def test_quantiles_beyond_torch_quantile_limit_match_torch_on_small_inputs():
    torch.manual_seed(0)
    samples = torch.randn(2, 3, 5, 101)
    forecast = Forecast(mean=samples.mean(-1), samples=samples)
    levels = [0.1, 0.5, 0.93]
    torch.testing.assert_close(forecast.quantile(levels), samples.quantile(torch.tensor(levels), dim=-1))
    torch.testing.assert_close(forecast.quantile(0.25), samples.quantile(0.25, dim=-1))
    large = torch.randn(1, 2, 33_000, 256)  # 16.9M samples: more than torch.quantile accepts
    assert large.numel() > 2**24
    median = Forecast(mean=large.mean(-1), samples=large).median
    assert median.shape == (1, 2, 33_000) and float(median.abs().mean()) < 0.2
