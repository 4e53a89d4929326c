"""Data sources (Hugging Face datasets, CSV/Parquet wide and long, synthetic) and the windows built from them."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("lightning", reason=missing("train"))

import datasets
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from train_fixtures import co2_frame, write_co2_csv  # noqa: F401

from toto.validation import InputError
from train.datamodule import TotoDataModule
from train.sources import (
    DataSourceError,
    HFDatasetSource,
    RepeatingProfileSource,
    SyntheticSource,
    TableSource,
)
from train.synthetic import SyntheticSeriesGenerator
from train.windows import collate_windows


def _gift_eval_rows(multivariate: bool) -> dict:
    co2 = co2_frame()["co2"].to_numpy()
    target = [np.stack([co2, co2 * 2]).tolist()] if multivariate else [[None if np.isnan(v) else v for v in co2]]
    return {"item_id": ["co2"], "start": [pd.Timestamp("1958-03-29")], "freq": ["W-SAT"], "target": target}


def test_hf_save_to_disk_folder_and_parquet_files(tmp_path):
    datasets.Dataset.from_dict(_gift_eval_rows(False)).save_to_disk(tmp_path / "saved")
    datasets.Dataset.from_dict(_gift_eval_rows(True)).to_parquet(tmp_path / "rows.parquet")
    (univariate,) = HFDatasetSource(str(tmp_path / "saved")).load()
    (multivariate,) = HFDatasetSource(str(tmp_path / "rows.parquet")).load()
    assert univariate.target.shape == (1, 2284) and multivariate.target.shape == (2, 2284)
    assert np.isnan(univariate.target).sum() == 59 == np.isnan(multivariate.target[0]).sum()  # None, NaN: missing
    np.testing.assert_allclose(multivariate.target[1], 2 * multivariate.target[0], rtol=1e-6)


def test_hf_exogenous_fields(tmp_path):
    rows = {"item_id": ["a"], "start": [pd.Timestamp("2024-01-01")], "freq": ["h"],
            "target": [np.arange(300.0).tolist()], "feat_dynamic_real": [np.ones((2, 300)).tolist()]}
    datasets.Dataset.from_dict(rows).save_to_disk(tmp_path / "saved")
    (record,) = HFDatasetSource(str(tmp_path / "saved"), exogenous_fields=["feat_dynamic_real"]).load()
    assert record.target.shape == (1, 300) and record.exogenous.shape == (2, 300)


def test_csv_wide_with_ids_and_gaps(tmp_path):
    frame = pd.DataFrame({
        "host": ["a"] * 5 + ["b"] * 4,
        "timestamp": list(pd.date_range("2024-01-01", periods=5, freq="h"))
        + list(pd.date_range("2024-01-01", periods=5, freq="h").delete(2)),  # b misses 02:00
        "cpu": np.arange(9.0), "mem": np.arange(9.0) * 10,
    }).sample(frac=1, random_state=0)  # unsorted rows
    frame.to_csv(tmp_path / "hosts.csv", index=False)
    records = TableSource(str(tmp_path / "hosts.csv"), id_column="host", freq="h").load()
    a, b = sorted(records, key=lambda r: r.name)
    np.testing.assert_array_equal(a.target, [[0, 1, 2, 3, 4], [0, 10, 20, 30, 40]])
    np.testing.assert_array_equal(b.target[0], [5, 6, np.nan, 7, 8])
    univariate = TableSource(str(tmp_path / "hosts.csv"), id_column="host", multivariate=False).load()
    assert [r.target.shape[0] for r in univariate] == [1, 1, 1, 1]


def test_long_form_and_parquet_folder(tmp_path):
    co2 = co2_frame()
    long = co2.melt(id_vars="timestamp", var_name="metric", value_name="value").assign(item="mauna_loa")
    (tmp_path / "folder").mkdir()
    long.to_parquet(tmp_path / "folder" / "co2_long.parquet")
    (record,) = TableSource(str(tmp_path / "folder"), layout="long", id_column="item", variable_column="metric").load()
    np.testing.assert_array_equal(record.target[0], co2["co2"].to_numpy(np.float32))


def test_unreadable_files_name_the_file_and_the_reason(tmp_path):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(DataSourceError, match=r"broken\.parquet: cannot read as parquet"):
        TableSource(str(bad)).load()
    csv = write_co2_csv(tmp_path / "co2.csv")
    with pytest.raises(DataSourceError, match=r"co2\.csv: the target column 'requests' is not in the table"):
        TableSource(str(csv), target_columns=["requests"]).load()
    with pytest.raises(DataSourceError, match=r"no \.csv/\.parquet files found"):
        TableSource(str(tmp_path / "nothing_here")).load()
    with pytest.raises(DataSourceError, match=r"broken\.parquet: cannot read as a Hugging Face dataset"):
        HFDatasetSource(str(bad)).load()


def test_synthetic_series_are_reproducible_and_varied():
    generator = SyntheticSeriesGenerator(length=1024, max_variates=4, seed=0)
    series = [generator.series(i) for i in range(200)]
    np.testing.assert_array_equal(series[7], SyntheticSeriesGenerator(1024, 4, seed=0).series(7))
    assert not np.array_equal(series[7], SyntheticSeriesGenerator(1024, 4, seed=1).series(7), equal_nan=True)
    assert {s.shape[0] for s in series} == {1, 2, 3, 4}
    assert any(np.isnan(s).any() for s in series)
    scales = [np.nanstd(s) for s in series]
    assert max(scales) / min(scales) > 1e4  # magnitudes span orders
    diffs = [np.diff(s[0][~np.isnan(s[0])]) for s in series]
    assert any((d >= 0).mean() > 0.99 for d in diffs)  # counters
    kurtosis = [pd.Series(d).kurt() for d in diffs]
    assert max(kurtosis) > 20  # heavy tails / spikes



def test_repeating_profiles_repeat_their_cycle_almost_exactly():
    source = RepeatingProfileSource(num_series=60, length=1200, max_variates=3, seed=0)
    records = source.load()
    np.testing.assert_array_equal(records[5].target, RepeatingProfileSource(60, 1200, 3, seed=0).load()[5].target)
    assert {r.target.shape[0] for r in records} == {1, 2, 3}
    assert all(np.isfinite(r.target).all() and r.target.shape[1] == 1200 for r in records)

    def best_seasonal_naive_ratio(values: np.ndarray, max_lag: int = 400) -> float:
        """Error of repeating the value `lag` steps back, over that of repeating the last value 1..lag steps ahead
        (the naive forecast over the same horizon), at the best lag of 2..max_lag."""
        lag_errors = np.array([np.abs(values[lag:] - values[:-lag]).mean() for lag in range(1, max_lag + 1)])
        naive_errors = np.cumsum(lag_errors) / np.arange(1, max_lag + 1)
        return float((lag_errors / naive_errors)[1:].min())

    ratios = np.array([best_seasonal_naive_ratio(r.target[0].astype(float)) for r in records])
    # Repeating the cycle beats repeating the last value by far on most series. Series without a cycle do not:
    # white noise gives about 1 at every lag, a random walk more than 1.
    assert np.median(ratios) < 0.3
    assert np.mean(ratios < 0.5) > 0.75
    walk = np.cumsum(np.random.default_rng(0).normal(size=1200))
    assert best_seasonal_naive_ratio(walk) > 0.6

def _ramp_module(length: int = 400, **kwargs) -> TotoDataModule:
    """One series whose value is its time index, so windows reveal where they were cut."""
    class Ramp(SyntheticSource):
        def load(self):
            from train.sources import SeriesRecord
            return [SeriesRecord("ramp", np.arange(length, dtype=np.float32)[None])]

    data = TotoDataModule([Ramp()], context_length=64, patch_size=8, val_length=24, batch_size=16, **kwargs)
    data.setup()
    return data


def test_validation_scores_only_the_held_back_end():
    data = _ramp_module()
    values, loss_mask, _ = data.val_dataset[0]
    targets = values[0, 8:][loss_mask[0]]
    np.testing.assert_array_equal(targets, np.arange(400 - 24, 400))
    for index in range(500):
        values, loss_mask, _ = data.train_dataset[index]
        assert np.nanmax(values) < 400 - 24, "training windows stay out of the held-back end"


@pytest.mark.integration
def test_windows_are_seeded_and_identical_with_workers():
    data = _ramp_module(seed=3)
    first = next(iter(DataLoader(data.train_dataset, batch_size=8, collate_fn=collate_windows)))
    again = next(iter(DataLoader(data.train_dataset, batch_size=8, collate_fn=collate_windows, num_workers=2)))
    assert torch.equal(first.series, again.series)
    other = _ramp_module(seed=4).train_dataset
    assert not np.array_equal(other[0][0], data.train_dataset[0][0], equal_nan=True)


def test_batches_group_variates_and_mask_missing_values():
    items = [
        (np.array([[1.0, np.nan, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]], np.float32), np.ones((2, 2), bool), 2),
        (np.array([[np.nan, np.nan, 1.0, 2.0]], np.float32), np.ones((1, 2), bool), 1),
    ]
    batch = collate_windows(items)
    assert batch.series.shape == (2, 2, 4) and batch.num_exogenous_variables == 0
    assert batch.padding_mask[0, 0].tolist() == [True, False, True, True]
    assert batch.series[0, 0, 1] == 0  # missing values enter as 0, masked
    assert batch.id_mask[1].tolist() == [[0] * 4, [1] * 4]  # the padding variate is its own group
    assert not batch.padding_mask[1, 1].any() and not batch.loss_mask[1, 1].any()


def test_tables_with_nothing_to_learn_from_are_refused_and_ignored_columns_named(tmp_path, caplog):
    hours = pd.date_range("2024-01-01", periods=300, freq="h")
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"timestamp": hours, "cpu": np.nan, "mem": np.nan}).to_csv(empty, index=False)
    with pytest.raises(DataSourceError, match=r"empty\.csv: column\(s\) \['cpu', 'mem'\] have no values"):
        TableSource(str(empty)).load()
    half = tmp_path / "half.csv"
    pd.DataFrame({"timestamp": hours, "cpu": np.arange(300.0), "mem": np.nan}).to_csv(half, index=False)
    with pytest.raises(DataSourceError, match=r"half\.csv: column\(s\) \['mem'\] have no values"):
        TableSource(str(half)).load()
    labelled = tmp_path / "labelled.csv"
    pd.DataFrame({"host": "a", "timestamp": hours, "cpu": np.arange(300.0), "note": "ok"}).to_csv(labelled, index=False)
    with caplog.at_level("WARNING", logger="train.sources"):
        (record,) = TableSource(str(labelled), id_column="host").load()
    assert record.target.shape == (1, 300)
    assert "labelled.csv: ignored column(s) ['note'] (not numeric)" in caplog.text


def test_a_source_without_any_observed_value_is_refused(tmp_path):
    import datasets

    rows = {"item_id": ["a", "b"], "start": ["2024-01-01"] * 2, "freq": ["h"] * 2, "target": [[None] * 300] * 2}
    datasets.Dataset.from_dict(rows).to_parquet(tmp_path / "missing.parquet")
    data = TotoDataModule([HFDatasetSource(str(tmp_path / "missing.parquet"))], context_length=64, patch_size=8)
    with pytest.raises(InputError, match=r"HFDatasetSource \(.*missing\.parquet\): no series holds an observed "
                                         "value .* nothing to learn"):
        data.setup()


def test_training_loader_resumes_at_the_batch_after_its_saved_position():
    data = _ramp_module(train_windows_per_epoch=40)  # 3 batches of 16 per epoch (the last one short)
    straight = data.train_dataloader()
    expected = [batch.series for _ in range(3) for batch in straight]  # three epochs, new order each

    interrupted = data.train_dataloader()
    seen = []
    for batch in interrupted:
        seen.append(batch.series)
        if len(seen) == 2:
            break
    state = interrupted.state_dict()
    assert state == {"epoch": 0, "windows_done": 32}  # 2 batches of 16
    resumed = data.train_dataloader()
    resumed.load_state_dict(state)
    assert len(resumed) == 3  # Lightning still sees a whole epoch
    seen += [batch.series for batch in resumed] + [batch.series for _ in range(2) for batch in resumed]
    assert len(seen) == len(expected) and all(torch.equal(a, b) for a, b in zip(seen, expected))
    assert not torch.equal(expected[0], expected[3]), "each epoch has its own order"
