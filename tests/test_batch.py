"""Batch forecasting of a panel streamed from disk over Lightning Fabric processes (toto.batch)."""

import pytest
from partial_install import missing

pytest.importorskip("pandas", reason=missing("cli"))

import numpy as np
import pandas as pd

from toto.api import InputError, predict_df
from toto.batch import BatchJob, forecast_files, read_parts

OPTIONS = {"num_samples": 8, "context_length": 96, "batch_size": 4, "seed": 3}


def write_panel(path, num_series=11, length=120):
    """A long table of hourly series with daily cycles, each series' rows together."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2026-01-01", periods=length, freq="h")
    frames = [pd.DataFrame({"id": f"host-{i:02d}", "timestamp": index,
                            "cpu": 50 + 10 * i + 5 * np.sin(np.arange(length) * 2 * np.pi / 24)
                            + rng.normal(0, 1, length)}) for i in range(num_series)]
    pd.concat(frames, ignore_index=True).to_parquet(path, index=False)
    return path


def job(tmp_path, out, **kw):
    return BatchJob(input_path=tmp_path / "panel.parquet", output_dir=tmp_path / out, prediction_length=6,
                    series_per_part=3, forecast_options=OPTIONS, **kw)


@pytest.mark.integration
def test_two_processes_give_the_one_process_results_which_are_predict_df(tmp_path):
    write_panel(tmp_path / "panel.parquet")
    one = read_parts(forecast_files(job(tmp_path, "one"), devices=1)[0].parent)
    two_parts = forecast_files(job(tmp_path, "two"), devices=2)
    assert {p.name[:9] for p in two_parts} == {"part-r000", "part-r001"}
    two = read_parts(tmp_path / "two")
    pd.testing.assert_frame_equal(one, two)
    whole = predict_df(pd.read_parquet(tmp_path / "panel.parquet"), 6, id_column="id", **OPTIONS)
    pd.testing.assert_frame_equal(one.drop(columns="series_index"), whole, check_dtype=False)


def test_an_interrupted_run_keeps_its_parts_and_writes_only_the_missing_ones(tmp_path):
    write_panel(tmp_path / "panel.parquet")
    parts = forecast_files(job(tmp_path, "out"))
    assert len(parts) == 4  # 11 series, 3 per part
    before = {p.name: p.stat().st_mtime_ns for p in parts}
    parts[2].unlink()  # as if the run had stopped while writing it
    again = forecast_files(job(tmp_path, "out"))
    after = {p.name: p.stat().st_mtime_ns for p in again}
    assert sorted(after) == sorted(before)
    assert [name for name in before if after[name] != before[name]] == [parts[2].name]
    assert len(read_parts(tmp_path / "out")) == 11 * 6


def test_series_whose_rows_are_not_together_are_refused(tmp_path):
    write_panel(tmp_path / "panel.parquet")
    table = pd.read_parquet(tmp_path / "panel.parquet")
    table.sample(frac=1, random_state=0).to_parquet(tmp_path / "panel.parquet", index=False)
    with pytest.raises(InputError, match="not together"):
        forecast_files(job(tmp_path, "out"))


@pytest.mark.integration
def test_toto_forecast_cli_writes_parts_over_two_processes(tmp_path, capsys):
    from toto.cli import main

    write_panel(tmp_path / "panel.parquet", num_series=4, length=72)
    code = main(["forecast", str(tmp_path / "panel.parquet"), "-p", "4", "-n", "4", "--context-length", "48",
                 "--output-dir", str(tmp_path / "parts"), "--devices", "2", "--series-per-part", "1"])
    assert code == 0 and "wrote     4 part files" in capsys.readouterr().err
    table = read_parts(tmp_path / "parts")
    assert list(table["id"].unique()) == [f"host-{i:02d}" for i in range(4)] and len(table) == 16
