import numpy as np
import torch

from toto.model.scaler import CausalPatchStdMeanScaler, causal_statistics


def direct_causal_statistics(x: np.ndarray, observed: np.ndarray, minimum_scale: float):
    """Mean and Bessel-corrected std of the observed values up to each step, computed the obvious way."""
    means, scales = [], []
    for t in range(len(x)):
        values = x[: t + 1][observed[: t + 1]]
        n = len(values)
        mean = values.mean() if n else 0.0
        variance = ((values - mean) ** 2).sum() / max(n - 1, 1) if n else 0.0
        means.append(mean)
        scales.append(np.sqrt(variance + minimum_scale))
    return np.array(means), np.array(scales)


def test_causal_statistics_match_direct_computation_with_missing_values():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=40)
    observed = rng.random(40) > 0.2
    observed[:3] = False
    data = torch.tensor(np.where(observed, x, np.nan))[None, None]
    means, scales, _ = causal_statistics(data, torch.tensor(observed, dtype=torch.float64)[None, None], 0.1)
    expected_means, expected_scales = direct_causal_statistics(x, observed, 0.1)
    np.testing.assert_allclose(means[0, 0].numpy(), expected_means, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scales[0, 0].numpy(), expected_scales, rtol=1e-9)


def test_patch_scaler_uses_statistics_at_end_of_each_patch_and_never_the_future():
    torch.manual_seed(0)
    data = torch.randn(2, 3, 32) * 10 + 4
    mask = torch.ones_like(data, dtype=torch.bool)
    scaler = CausalPatchStdMeanScaler(patch_size=8)
    scaled, loc, scale = scaler(data, mask)
    means, scales, _ = causal_statistics(data, mask.float(), 0.1)
    for patch in range(4):
        block = slice(patch * 8, (patch + 1) * 8)
        assert torch.allclose(loc[..., block], means[..., patch * 8 + 7 : patch * 8 + 8].expand(-1, -1, 8))
        assert torch.allclose(scale[..., block], scales[..., patch * 8 + 7 : patch * 8 + 8].expand(-1, -1, 8))
    changed = data.clone()
    changed[..., 24:] += 100.0  # the future must not move earlier statistics
    _, loc2, _ = scaler(changed, mask)
    assert torch.equal(loc2[..., :24], loc[..., :24]) and not torch.equal(loc2[..., 24:], loc[..., 24:])
    assert torch.allclose(scaled, (data - loc) / scale)


def test_global_stabilisation_clamps_scale_to_context_range():
    data = torch.zeros(1, 1, 16)
    data[..., 8:] = torch.linspace(0, 1e6, 8)
    mask = torch.ones_like(data, dtype=torch.bool)
    loose = CausalPatchStdMeanScaler(patch_size=4, stabilize_with_global=True, scale_factor_exponent=10.0)
    tight = CausalPatchStdMeanScaler(patch_size=4, stabilize_with_global=True, scale_factor_exponent=0.5)
    _, _, scale_loose = loose(data, mask)
    _, _, scale_tight = tight(data, mask)
    global_std = data.double().std(unbiased=False)
    assert float(scale_loose[..., 0]) < float(global_std) / 10 ** 0.5  # early constant part: tiny scale
    assert float(scale_tight[..., 0]) >= float(global_std) / 10 ** 0.5 * 0.999  # clamped up to the bound


def test_continuing_from_a_state_equals_rescanning_the_whole_series():
    torch.manual_seed(0)
    data = torch.randn(3, 2, 64) * 50 + 7
    mask = torch.rand_like(data) > 0.1
    scaler = CausalPatchStdMeanScaler(patch_size=8, stabilize_with_global=True, scale_factor_exponent=0.5)
    _, whole_loc, whole_scale = scaler(data, mask, prefix_length=48)
    _, head_loc, head_scale, state = scaler.scale_from(data[..., :48], mask[..., :48].float(), prefix_length=48)
    _, tail_loc, tail_scale, _ = scaler.scale_from(data[..., 48:], mask[..., 48:].float(), state=state)
    assert torch.allclose(torch.cat([head_loc, tail_loc], -1), whole_loc, rtol=1e-6)
    assert torch.allclose(torch.cat([head_scale, tail_scale], -1), whole_scale, rtol=1e-6)
    # The clamp bounds come from the context only (exponent 0.5 makes them bite).
    assert bool((tail_scale <= state.upper.float() * (1 + 1e-6)).all())
