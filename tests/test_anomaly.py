"""Anomaly detection from the predictive distribution: exact CDFs, the causal passes, calibration, streaming, and
the table and CLI entry points, on the embedded model and a real Toto 2.0 checkpoint (random weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from toto.anomaly.calibration import Calibration, calibrate, history_length
from toto.anomaly.detector import DetectionSettings
from toto.anomaly.distributions import QuantileKnots, StudentTMixture, tail_probability
from toto.anomaly.passes import Windows, plan_passes
from toto.cli import main as toto_main
from toto.pipeline import ForecastPipeline, Toto1Pipeline
from toto.streaming import StreamingDetector

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
V2 = Path(__file__).parent / "fixtures" / "toto2" / "xpos"


@pytest.fixture(scope="module")
def load() -> np.ndarray:
    """Hourly electricity load, a real series the embedded model never trained on (a validation series)."""
    return pd.read_csv(EXAMPLES / "electricity_demand.csv")["load"].to_numpy(dtype=float)


def test_the_mixture_cdf_is_the_student_t_mixture_and_its_quantiles_invert_it():
    rng = np.random.default_rng(0)
    shape = (3, 5, 4)  # (batch, values, components)
    weights = rng.dirichlet(np.ones(4), size=shape[:2])
    mixture = StudentTMixture(weights, 2.5 + rng.random(shape) * 5, rng.normal(size=shape), 0.2 + rng.random(shape),
                              rng.normal(size=shape[:2]) * 10, 1 + rng.random(shape[:2]))
    x = rng.normal(size=shape[:2]) * 15
    normalised = (x - mixture.data_loc) / mixture.data_scale
    expected = sum(mixture.weights[..., k] * stats.t.cdf(normalised, mixture.df[..., k], mixture.loc[..., k],
                                                          mixture.scale[..., k]) for k in range(4))
    np.testing.assert_allclose(mixture.cdf(x), expected, rtol=1e-10)
    lower, upper = mixture.tails(x)
    np.testing.assert_allclose(lower, expected, rtol=1e-10)
    np.testing.assert_allclose(lower + upper, 1.0, rtol=1e-12)
    for level in (0.005, 0.5, 0.995):
        np.testing.assert_allclose(mixture.cdf(mixture.quantile(level)), level, atol=1e-7)
    far = mixture.quantile(0.5) + 1e4 * mixture.data_scale  # deep in the upper tail: its own, not 1 - CDF
    lower, upper = mixture.tails(far)
    assert (upper > 0).all() and (tail_probability(lower, upper) < 1e-6).all()


def test_knots_are_linear_between_and_exponential_beyond_in_the_asinh_space():
    knots = np.sort(np.random.default_rng(1).normal(size=(2, 9)), axis=-1)
    distribution = QuantileKnots(knots, np.array([5.0, -3.0]), np.array([2.0, 0.5]))
    at_knots = distribution.data_loc[:, None] + distribution.data_scale[:, None] * np.sinh(knots)
    for i, level in enumerate(distribution.levels):
        np.testing.assert_allclose(distribution.tails(at_knots[:, i])[0], level, atol=1e-12)
        np.testing.assert_allclose(distribution.quantile(level), at_knots[:, i], rtol=1e-12)
    # The upper tail halves every (k9 - k8) above the last knot, so it passes through the 0.8 knot's 0.2 too.
    step = knots[:, -1] - knots[:, -2]
    beyond = distribution.data_loc + distribution.data_scale * np.sinh(knots[:, -1] + 3 * step)
    np.testing.assert_allclose(distribution.tails(beyond)[1], 0.1 / 8, rtol=1e-9)
    np.testing.assert_allclose(distribution.quantile(1 - 0.1 / 8), beyond, rtol=1e-9)


def test_passes_score_every_value_once_within_its_steps_ahead_and_context():
    windows = Windows(patch_size=16, window=512, min_context=128, steps_ahead=4)
    plan = plan_passes(5000, windows)
    t = np.arange(5000)
    assert (plan.steps_ahead_of <= 4).all()
    # Only the first steps_ahead values have no pass: the offset passes predict the rest of the first patch from
    # the values before them (their first patch is padding and those values).
    assert (plan.pass_of[:4] == -1).all() and (plan.pass_of[4:] >= 0).all()
    starts = np.array([p.start for p in plan.passes])[plan.pass_of]
    later = t >= windows.window
    assert (t[later] - starts[later] >= windows.min_context).all()  # after the first window: at least min_context
    # The predicting output sits one patch before the value, at the value's offset within its own patch.
    pads = np.array([p.left_pad for p in plan.passes])[plan.pass_of]
    scored = plan.pass_of >= 0
    assert (plan.position_of[scored] == (t - starts + pads - 16)[scored]).all()
    with pytest.raises(ValueError, match="multiples of the patch size"):
        Windows(16, 500, 128, 4)


def test_one_pass_gives_the_training_losss_next_patch_distribution(toto_tiny, load):
    """With one offset and a window over the whole series, the distribution of step t is the backbone's output one
    patch earlier, mapped by the scaler's statistics there: what the training loss scores."""
    values = load[:512]
    plan = plan_passes(512, Windows(16, 1024, 256, 16))
    model = toto_tiny.model.model
    mixture = toto_tiny.value_distributions_of(values[None, None], plan)
    series = torch.tensor(values, dtype=torch.float32)[None, None]
    context = series[..., :-16]  # as the training loss reads a window: every step predicts the one a patch later
    with torch.no_grad():
        output = model(context, torch.ones_like(context, dtype=torch.bool), torch.zeros_like(context, dtype=torch.long))
    target = (series[..., 16:] - output.loc) / output.scale
    density = output.distribution.log_prob(target).exp() / output.scale
    ours = mixture.density(values[None, None])[..., 16:]
    np.testing.assert_allclose(ours, density.double().numpy(), rtol=2e-4)


def test_scores_at_t_read_nothing_after_t(toto_tiny, load):
    values = load[:700].copy()
    changed = values.copy()
    changed[400:] = changed[400:] * 3 + 100
    settings = DetectionSettings(calibration=Calibration(window=256, min_scores=32, refit_every=16))
    first = toto_tiny.detect(values[None, None], 3600.0, settings)
    second = toto_tiny.detect(changed[None, None], 3600.0, settings)
    np.testing.assert_allclose(first.anomaly_score[..., :400], second.anomaly_score[..., :400], equal_nan=True)
    assert not np.allclose(first.anomaly_score[..., 450:], second.anomaly_score[..., 450:], equal_nan=True)


def test_a_spike_in_a_real_series_is_the_top_score_and_flagged_missing_values_get_none(toto_tiny, load):
    values = load.copy()
    spike, gap = 700, slice(1100, 1112)
    values[spike] += 10 * np.nanstd(np.diff(values))
    values[gap] = np.nan
    detection = toto_tiny.detect(values[None, None], 3600.0)  # one alert per day: 1 in 24 hourly values
    score = detection.anomaly_score[0, 0]
    assert np.nanargmax(score[: gap.start]) == spike and detection.is_anomaly[0, 0, spike]
    assert np.isnan(score[gap]).all() and np.isfinite(score[gap.stop + 16 :]).all()
    assert (detection.lower[0, 0, 32:] < detection.median[0, 0, 32:]).all()
    assert (detection.median[0, 0, 32:] < detection.upper[0, 0, 32:]).all()


def test_calibrated_scores_are_uniform_on_the_series_own_behaviour():
    """Conformal ranks with an exponential tail: under exchangeable surprises, q is uniform, far out too."""
    rng = np.random.default_rng(2)
    surprise = rng.gamma(2.0, 1.5, size=20_000)  # a miscalibrated model: not Exp(1)
    calibration = Calibration(window=2016, min_scores=64, refit_every=64)
    q = calibrate(surprise, calibration)[2016:]
    for alpha in (0.1, 0.01, 0.001):
        assert abs((q <= alpha).mean() - alpha) < 0.35 * alpha + 2e-4, alpha
    # A stream calibrates its new values as the whole pass does.
    pieces, position = [], 0
    while position < 5000:
        count = int(rng.integers(1, 300))
        first = max(0, position - history_length(calibration))
        pieces.append(calibrate(surprise[position : position + count], calibration, surprise[first:position], first))
        position += count
    np.testing.assert_array_equal(np.concatenate(pieces)[:5000], calibrate(surprise[:5000], calibration))


def test_multivariate_series_get_a_combined_score_per_step(toto_tiny, load):
    values = np.stack([load[:800], load[:800] * 0.2 + 50])
    values[1, 500] += 400
    detection = toto_tiny.detect(values[None], 3600.0)
    assert detection.combined_score.shape == (1, 800)
    assert np.nanargmax(detection.combined_score[0]) == 500
    # Sidak: the chance that the more surprising of two variates is that surprising.
    smallest = 1 - np.nanmax(detection.anomaly_score[0, :, 500])
    np.testing.assert_allclose(1 - detection.combined_score[0, 500], 1 - (1 - smallest) ** 2)


def test_a_stream_scores_new_values_as_a_whole_history_pass_does(toto_tiny, load):
    """The cached passes and the calibration continue where they stopped: the scores of rows pushed in uneven
    pieces track those of one detection over the whole history (KV caching rounds differently), across windows."""
    pipeline = Toto1Pipeline(toto_tiny.model, context_length=256)  # short windows, so several start on the way
    values = load[:900].copy()
    values[300:305] = np.nan
    values[600] += 3000
    timestamps = 1_400_000_000 + 3600 * np.arange(900)
    settings = DetectionSettings(calibration=Calibration(window=256, min_scores=32, refit_every=16))
    whole = pipeline.detect(values[None, None], 3600.0, settings).anomaly_score[0, 0]
    detector = StreamingDetector(pipeline, step_seconds=3600, settings=settings)
    rng = np.random.default_rng(3)
    scores, position = [], 0
    while position < 900:
        count = int(rng.integers(1, 40))
        update = detector.update("web-1", timestamps[position : position + count], values[position : position + count])
        scores.append(update.detection.anomaly_score[0, 0])
        position += count
    streamed = np.concatenate(scores)
    np.testing.assert_array_equal(np.isnan(streamed), np.isnan(whole))
    scored = np.isfinite(whole)
    assert np.abs(streamed - whole)[scored].mean() < 0.01 and streamed[600] > 0.99
    assert detector.nbytes() > 0


def test_streams_of_many_series_keep_their_caches_within_the_memory_budget(toto_tiny, load):
    detector = StreamingDetector(toto_tiny, step_seconds=3600, memory_budget_bytes=2_000_000)
    timestamps = 1_400_000_000 + 3600 * np.arange(200)

    def held() -> int:  # what the streams hold, counted afresh (the detector keeps a running total)
        return sum(state.stream.nbytes() for state in detector._series.values())

    for i in range(12):
        detector.update(i, timestamps, load[i * 50 : i * 50 + 200])
        assert detector.nbytes() == held() <= 2_000_000
    assert detector.released > 0
    later = detector.update(0, timestamps[-1] + 3600 * np.arange(1, 33), load[200:232])  # released: rebuilt
    assert len(detector) == 12 and np.isfinite(later.detection.anomaly_score).sum() == 32
    assert detector.nbytes() == held() > 0
    detector.forget(0)
    assert len(detector) == 11 and detector.nbytes() == held()


def test_an_irregular_export_gets_a_score_for_every_row_in_its_order(toto_tiny, load):
    """Gaps, a repeated timestamp, a row off the grid and a clock that moves back an hour: every row is scored."""
    times = pd.date_range("2024-01-01", periods=600, freq="h")
    frame = pd.DataFrame({"timestamp": times, "value": load[:600]}).drop(index=range(200, 230))
    repeated = frame.iloc[[100]].assign(value=frame["value"].iloc[100] + 1)
    off_grid = frame.iloc[[150]].assign(timestamp=frame["timestamp"].iloc[150] + pd.Timedelta("17min"))
    frame = pd.concat([frame.iloc[:300], repeated, off_grid, frame.iloc[[298]], frame.iloc[300:]], ignore_index=True)
    frame.loc[frame.index[-5], "value"] += 3000  # an anomaly to find
    scored, placement = toto_tiny.detect_table(frame)
    assert len(scored) == len(frame) and (scored["timestamp"].to_numpy() == frame["timestamp"].to_numpy()).all()
    assert scored["anomaly_score"].between(0, 1).sum() >= len(frame) - 20  # all but the first patch
    assert np.nanargmax(scored["anomaly_score"]) == len(frame) - 5
    assert (placement.gaps, placement.repeated, placement.off_grid, placement.backwards) == (30, 3, 1, 1)
    assert "30 missing steps" in placement.summary() and "1 steps back in time" in placement.summary()


def test_toto_detect_cli_writes_one_row_per_input_row_and_a_plot(tmp_path, load, capsys):
    rows = pd.DataFrame({"timestamp": pd.date_range("2024-03-01", periods=500, freq="5min"), "value": load[:500]})
    rows.loc[400, "value"] = 9000.0
    source, output, plot = tmp_path / "cpu.csv", tmp_path / "scored.csv", tmp_path / "scored.png"
    rows.to_csv(source, index=False)
    assert toto_main(["detect", str(source), "--output", str(output), "--plot", str(plot)]) == 0
    scored = pd.read_csv(output)
    assert list(scored.columns) == ["timestamp", "value", "anomaly_score", "is_anomaly", "lower", "upper", "median"]
    assert len(scored) == 500 and scored["anomaly_score"].idxmax() == 400 and scored["is_anomaly"][400]
    assert plot.stat().st_size > 10_000
    summary = capsys.readouterr().err
    assert "500 rows on a 5min grid" in summary and "flagged at 1 alert(s) per day" in summary
    with pytest.raises(SystemExit) as stop:
        toto_main(["detect", str(source), "--false-alarm-rate", "2"])
    assert stop.value.code == 2 and "false_alarm_rate must lie strictly between 0 and 1" in capsys.readouterr().err


def test_a_toto2_checkpoint_scores_values_from_its_knots(load):
    pipeline = ForecastPipeline.from_pretrained(V2, device="cpu")
    values = load[:296]  # whole patches of 8, as the model's own forward takes them
    knots = pipeline.value_distributions(values[None, None], steps_ahead=pipeline.patch_size)
    series = torch.tensor(values, dtype=torch.float32)[None, None]
    with torch.no_grad():
        output = pipeline.model(series, torch.ones_like(series, dtype=torch.bool))
    patch = pipeline.patch_size
    expected = output.quantiles[:, 0, 0, :-1, :patch].reshape(9, -1).T.sort(-1).values  # patch i predicts i + 1
    np.testing.assert_allclose(knots.knots[0, 0, patch:], expected.double().numpy(), rtol=1e-5, atol=1e-6)
    detection = pipeline.detect(values[None, None], 3600.0)
    assert np.isfinite(detection.anomaly_score[0, 0, patch:]).all()
