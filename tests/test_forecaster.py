import numpy as np
import pytest
import torch

from toto import MaskedTimeseries, Toto, TotoConfig, TotoForecaster
from toto.inference.streams import row_seeds


@pytest.fixture(scope="module")
def forecaster():
    torch.manual_seed(0)
    return TotoForecaster(Toto(TotoConfig.tiny()).model)


def seasonal(length: int, variates: int = 2, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    rows = [10 + 3 * np.sin(2 * np.pi * t / 24 + v) + rng.normal(0, 0.3, length) for v in range(variates)]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


def test_shapes_quantiles_and_statistics(forecaster):
    inputs = MaskedTimeseries.from_series(torch.stack([seasonal(100), seasonal(100, seed=1)]))
    forecast = forecaster.forecast(inputs, prediction_length=30, num_samples=37, samples_per_batch=10, seed=0)
    assert forecast.samples.shape == (2, 2, 30, 37)
    assert forecast.mean.shape == forecast.median.shape == forecast.std.shape == (2, 2, 30)
    q = forecast.quantile([0.1, 0.5, 0.9])
    assert q.shape == (3, 2, 2, 30) and bool((q[0] <= q[1]).all() and (q[1] <= q[2]).all())
    assert torch.allclose(forecast.mean, forecast.samples.mean(-1))
    assert bool(torch.isfinite(forecast.samples).all())


def test_seed_reproduces_and_rows_are_batch_invariant(forecaster):
    short, long = seasonal(70, seed=2), seasonal(130, seed=3)
    ragged = torch.full((2, 2, 130), float("nan"))
    ragged[0, :, -70:] = short  # left-padded with NaN
    ragged[1] = long
    seeds = [11, 22]
    batch = forecaster.forecast(MaskedTimeseries.from_series(ragged), 20, num_samples=16, seed=seeds)
    again = forecaster.forecast(MaskedTimeseries.from_series(ragged), 20, num_samples=16, seed=seeds)
    assert torch.equal(batch.samples, again.samples)
    alone = forecaster.forecast(MaskedTimeseries.from_series(short), 20, num_samples=16, seed=[11])
    assert torch.allclose(batch.samples[0], alone.samples[0], rtol=1e-5, atol=1e-5)
    # Many whole patches of padding change nothing either: they are hidden and positions start at the data.
    padded = torch.full((1, 2, 400), float("nan"))
    padded[0, :, -70:] = short
    far = forecaster.forecast(MaskedTimeseries.from_series(padded), 20, num_samples=16, seed=[11])
    assert torch.allclose(far.samples, alone.samples, rtol=1e-5, atol=1e-5)
    other = forecaster.forecast(MaskedTimeseries.from_series(short), 20, num_samples=16, seed=[12])
    assert not torch.allclose(other.samples, alone.samples)
    # An integer seed is shorthand for the per-row seeds row_seeds() derives.
    by_int = forecaster.forecast(MaskedTimeseries.from_series(ragged), 20, num_samples=16, seed=5)
    by_list = forecaster.forecast(MaskedTimeseries.from_series(ragged), 20, num_samples=16, seed=row_seeds(5, 2))
    assert torch.equal(by_int.samples, by_list.samples)


def test_nan_is_missing_and_finite_masked_values_are_read_as_toto_1_reads_them(forecaster):
    """NaN: no weight in the statistics and read at the running mean. A finite value with padding_mask=False: no
    weight either, but the model reads its scaled value, as in Toto 1.0 (docs/architecture.md, differences)."""
    series = seasonal(96) + 100.0
    gappy = series.clone()
    gappy[:, 40:50] = float("nan")
    zeros = series.clone()
    zeros[:, 40:50] = 0.0
    mask = torch.ones_like(series, dtype=torch.bool)
    mask[:, 40:50] = False
    masked_zeros = MaskedTimeseries(zeros, mask, torch.zeros_like(mask, dtype=torch.long),
                                    torch.zeros_like(mask, dtype=torch.long), torch.ones(2, dtype=torch.long))
    with_nan = forecaster.forecast(MaskedTimeseries.from_series(gappy), 24).mean
    with_mask = forecaster.forecast(masked_zeros, 24).mean
    as_zero = forecaster.forecast(MaskedTimeseries.from_series(zeros), 24).mean
    assert bool(torch.isfinite(with_nan).all())
    model = forecaster.model
    scaled_nan, loc_nan, scale_nan, _ = model.scale(gappy[None], torch.isfinite(gappy)[None])
    scaled_mask, loc_mask, scale_mask, _ = model.scale(zeros[None], mask[None])
    assert torch.equal(loc_nan, loc_mask) and torch.equal(scale_nan, scale_mask)  # same weights
    assert bool((scaled_nan[..., 40:50] == 0).all())  # NaN: at the running mean
    assert torch.allclose(scaled_mask[..., 40:50], (0 - loc_mask[..., 40:50]) / scale_mask[..., 40:50])
    assert not torch.allclose(with_nan, with_mask, atol=1e-3)
    assert not torch.allclose(with_mask, as_zero, atol=1e-2)  # and zeros that count differ from both


def test_mean_forecast_has_no_quantiles(forecaster):
    forecast = forecaster.forecast(MaskedTimeseries.from_series(seasonal(64)), 5)
    assert forecast.mean.shape == (1, 2, 5) and forecast.samples is None
    with pytest.raises(ValueError, match="num_samples"):
        _ = forecast.median


@pytest.mark.parametrize("feedback", ["sample", "mean"])
def test_future_exogenous_values_are_used_as_given(forecaster, feedback):
    series = torch.stack([seasonal(80, 1)[0], torch.arange(80, dtype=torch.float32)])
    inputs = MaskedTimeseries.from_series(series, num_exogenous_variables=1)
    future = torch.arange(80, 100, dtype=torch.float32).view(1, 1, 20)
    forecast = forecaster.forecast(inputs, 20, num_samples=8, future_exogenous_variables=future, seed=0,
                                   feedback=feedback)
    assert torch.equal(forecast.samples[0, 1], future[0, 0, :, None].expand(20, 8))
    with pytest.raises(ValueError, match="future_exogenous_variables"):
        forecaster.forecast(inputs, 20)


@pytest.mark.parametrize(
    "series, horizon, samples, message",
    [
        (torch.zeros(0, 10), 5, None, "empty"),
        (torch.zeros(2, 0), 5, None, "empty"),
        (torch.full((1, 10), float("nan")), 5, None, "no finite observed value"),
        (torch.zeros(10), 5, None, "series must be"),
        (torch.zeros(1, 10), 0, None, "prediction_length"),
        (torch.zeros(1, 10), 2.5, None, "prediction_length"),
        (torch.zeros(1, 10), 5, 0, "num_samples"),
        (torch.full((1, 10), 3e38), 5, None, "overflow float32"),
    ],
)
def test_bad_input_gets_a_clear_error(forecaster, series, horizon, samples, message):
    with pytest.raises(ValueError, match=message):
        forecaster.forecast(MaskedTimeseries(series, torch.ones_like(series, dtype=torch.bool) & series.isfinite(),
                                             torch.zeros_like(series, dtype=torch.long),
                                             torch.zeros_like(series, dtype=torch.long),
                                             torch.ones(series.shape[:-1], dtype=torch.long)),
                            horizon, num_samples=samples)


def test_official_style_batched_forward_with_kv_cache_matches_full_forward():
    """Toto 1.0's calling convention: the same series grows by a patch, only the new patch runs with a cache."""
    torch.manual_seed(0)
    model = Toto(TotoConfig.tiny()).model.eval()
    x = torch.randn(1, 2, 64)
    mask = torch.ones_like(x, dtype=torch.bool)
    ids = torch.zeros_like(x, dtype=torch.long)
    cache = model.allocate_kv_cache(1, 2, 80, x.device, x.dtype)
    with torch.no_grad():
        first = model(x[..., :48], mask[..., :48], ids[..., :48], cache, scaling_prefix_length=48)
        second = model(x, mask, ids, cache, scaling_prefix_length=48)
        full = model(x, mask, ids, None, scaling_prefix_length=48)
    assert first.distribution.mean.shape == (1, 2, 48) and second.distribution.mean.shape == (1, 2, 16)
    assert torch.allclose(second.distribution.mean, full.distribution.mean[..., -16:], rtol=1e-3, atol=1e-3)


def test_context_ensemble_pools_the_paths_of_each_window_as_if_cut_alone(forecaster):
    """Paths are dealt out in blocks, window by window, and path p keeps its stream: each block equals a forecast
    of the series cut to that window, and the pooled forecast is seeded and batch-invariant as a single one."""
    series = torch.stack([seasonal(300, seed=4), seasonal(300, seed=5)])
    inputs = MaskedTimeseries.from_series(series)
    pooled = forecaster.forecast(inputs, 20, num_samples=12, seed=[3, 4], context_ensemble=(64, 160, 512))
    assert pooled.samples.shape == (2, 2, 20, 12)
    assert torch.allclose(pooled.mean, pooled.samples.mean(-1))
    short = forecaster.forecast(MaskedTimeseries.from_series(series[..., -64:]), 20, num_samples=4, seed=[3, 4])
    middle = forecaster.forecast(MaskedTimeseries.from_series(series[..., -160:]), 20, num_samples=8, seed=[3, 4])
    whole = forecaster.forecast(inputs, 20, num_samples=12, seed=[3, 4])  # 512 is capped at the 300 steps given
    assert torch.allclose(pooled.samples[..., :4], short.samples, atol=1e-5)
    assert torch.allclose(pooled.samples[..., 4:8], middle.samples[..., 4:8], atol=1e-5)
    assert torch.allclose(pooled.samples[..., 8:], whole.samples[..., 8:], atol=1e-5)
    assert not torch.allclose(pooled.samples[..., :4], whole.samples[..., :4])
    alone = forecaster.forecast(MaskedTimeseries.from_series(series[1]), 20, num_samples=12, seed=[4],
                                context_ensemble=(64, 160, 512))
    assert torch.allclose(pooled.samples[1], alone.samples[0], atol=1e-5)
    # A mean-only forecast averages the windows' means.
    means = [forecaster.forecast(MaskedTimeseries.from_series(series[..., -n:]), 20).mean for n in (64, 160, 300)]
    pooled_mean = forecaster.forecast(inputs, 20, context_ensemble=(64, 160, 512)).mean
    assert torch.allclose(pooled_mean, sum(means) / 3, atol=1e-5)


def test_context_ensemble_window_reaches_back_to_a_stale_variates_last_value(forecaster):
    """A variate last observed before a short window starts would be read as nothing: that series' window reaches
    back to the observation instead, as if it had been cut there."""
    series = seasonal(200, seed=6)
    series[1, -100:] = float("nan")  # variate 1 last seen 100 steps ago
    pooled = forecaster.forecast(MaskedTimeseries.from_series(series), 16, num_samples=4, seed=[9],
                                 context_ensemble=(32, 200))
    reach = forecaster.forecast(MaskedTimeseries.from_series(series[:, -101:]), 16, num_samples=2, seed=[9])
    assert bool(torch.isfinite(pooled.samples).all())
    assert torch.allclose(pooled.samples[..., :2], reach.samples, atol=1e-5)


def test_mean_feedback_draws_each_step_given_the_mean_forecast(forecaster):
    """feedback="mean": the mean is decoded once per series and every path's values are drawn from each step's
    distribution given it. Path p takes the same numbers from its stream as under sample feedback, so the first
    patch is the same; later patches are not. The paths average to the mean forecast, which is that decode."""
    patch = forecaster.model.patch_size
    series = torch.stack([seasonal(200, seed=7), seasonal(200, seed=8)])
    inputs = MaskedTimeseries.from_series(series)
    horizon = 3 * patch
    sampled = forecaster.forecast(inputs, horizon, num_samples=16, seed=[1, 2], context_ensemble=(64, 200))
    given_mean = forecaster.forecast(inputs, horizon, num_samples=16, seed=[1, 2], context_ensemble=(64, 200),
                                     feedback="mean")
    assert given_mean.samples.shape == sampled.samples.shape
    assert torch.allclose(given_mean.samples[..., :patch, :], sampled.samples[..., :patch, :], atol=1e-5)
    assert not torch.allclose(given_mean.samples[..., patch:, :], sampled.samples[..., patch:, :], atol=1e-2)
    alone = forecaster.forecast(MaskedTimeseries.from_series(series[1]), horizon, num_samples=16, seed=[2],
                                context_ensemble=(64, 200), feedback="mean")
    assert torch.allclose(given_mean.samples[1], alone.samples[0], rtol=1e-5, atol=1e-5)  # seeded, batch-invariant

    many = forecaster.forecast(inputs, horizon, num_samples=2048, seed=[1, 2], feedback="mean")
    mean = forecaster.forecast(inputs, horizon).mean  # decoded from its own means: what mean feedback conditions on
    error = (many.samples.mean(-1) - mean).abs() / (many.samples.std(-1) / 2048 ** 0.5)
    assert float(error.max()) < 5  # within sampling noise of the exact mean, at every step
    with pytest.raises(ValueError, match="feedback must be one of 'sample', 'mean'"):
        forecaster.forecast(inputs, horizon, num_samples=4, feedback="median")


def test_the_composed_output_head_follows_weights_changed_in_place():
    """The output head is composed once and cached; a weight changed in place, in eval mode (under no_grad, or by
    an optimizer step), must reach the next forecast as it reaches a model freshly loaded with the same weights."""
    torch.manual_seed(0)
    model = Toto(TotoConfig.tiny())
    forecaster = TotoForecaster(model.model)  # puts it in eval mode once: no train()/eval() switch below
    inputs = MaskedTimeseries.from_series(seasonal(100))

    def forecast(on: TotoForecaster) -> torch.Tensor:
        return on.forecast(inputs, 20, num_samples=8, seed=0).samples

    def forecast_of_a_copy() -> torch.Tensor:
        fresh = Toto(TotoConfig.tiny())
        fresh.load_state_dict(model.state_dict())
        return forecast(TotoForecaster(fresh.model))

    before = forecast(forecaster)
    with torch.no_grad():
        model.model.unembed.weight.mul_(2)
    changed = forecast(forecaster)
    assert not torch.allclose(changed, before, atol=1e-3)
    assert torch.equal(changed, forecast_of_a_copy())

    projection = model.model.output_distribution.projections()[0]
    projection.bias.grad = torch.ones_like(projection.bias)
    torch.optim.SGD([projection.bias], lr=0.5).step()
    stepped = forecast(forecaster)
    assert not torch.allclose(stepped, changed, atol=1e-3)
    assert torch.equal(stepped, forecast_of_a_copy())
