"""Batch forecasting of a panel streamed from disk over Lightning Fabric processes (toto.batch)."""

import pytest
from partial_install import missing

pytest.importorskip("pandas", reason=missing("cli"))

import dataclasses
import json

import numpy as np
import pandas as pd

from toto.api import InputError, predict_df
from toto.batch import MANIFEST_FILE, BatchJob, forecast_files, read_parts
from toto.cli import main

OPTIONS = {"num_samples": 8, "context_length": 96, "batch_size": 4, "seed": 3}


def write_panel(path, num_series=11, length=120, level=50):
    """A long table of hourly series with daily cycles, each series' rows together."""
    rng = np.random.default_rng(0)
    index = pd.date_range("2026-01-01", periods=length, freq="h")
    frames = [pd.DataFrame({"id": f"host-{i:02d}", "timestamp": index,
                            "cpu": level + 10 * i + 5 * np.sin(np.arange(length) * 2 * np.pi / 24)
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
    write_panel(tmp_path / "panel.parquet", num_series=4, length=72)
    code = main(["forecast", str(tmp_path / "panel.parquet"), "-p", "4", "-n", "4", "--context-length", "48",
                 "--output-dir", str(tmp_path / "parts"), "--devices", "2", "--series-per-part", "1"])
    assert code == 0 and "wrote     4 part files" in capsys.readouterr().err
    table = read_parts(tmp_path / "parts")
    assert list(table["id"].unique()) == [f"host-{i:02d}" for i in range(4)] and len(table) == 16


def test_a_folder_resumes_only_the_run_its_parts_were_made_from(tmp_path):
    write_panel(tmp_path / "panel.parquet")
    parts = forecast_files(job(tmp_path, "out"))
    written = {p.name: p.stat().st_mtime_ns for p in parts}
    assert forecast_files(job(tmp_path, "out")) == parts  # the same run: every part is there already
    write_panel(tmp_path / "other.parquet", level=20_000)  # the same layout, other values
    other_input = dataclasses.replace(job(tmp_path, "out"), input_path=tmp_path / "other.parquet")
    for other, difference in [
        (other_input, "another input file (sha256 "),
        (dataclasses.replace(job(tmp_path, "out"), prediction_length=8), "prediction_length 6 (this run: 8)"),
        (dataclasses.replace(job(tmp_path, "out"), forecast_options={**OPTIONS, "quantiles": [0.2, 0.8]}),
         "forecast_options.quantiles unset (this run: [0.2, 0.8])"),
    ]:
        with pytest.raises(InputError, match="holds forecast parts made from") as refused:
            forecast_files(other)
        assert difference in str(refused.value) and "remove" in str(refused.value), refused.value
        assert "\n" not in str(refused.value)
    with pytest.raises(InputError, match=r"processes 1 \(this run: 2\)"):
        forecast_files(job(tmp_path, "out"), devices=2)
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("part-r*")} == written
    table = read_parts(tmp_path / "out")
    assert len(table) == 11 * 6 and table["median"].max() < 1_000  # the first input's forecasts
    for part in parts:  # a folder whose parts were removed (or never written) takes any run
        part.unlink()
    forecast_files(other_input)
    assert read_parts(tmp_path / "out")["median"].min() > 10_000


def test_parts_without_a_record_of_what_made_them_are_not_resumed(tmp_path):
    write_panel(tmp_path / "panel.parquet")
    forecast_files(job(tmp_path, "out"))
    (tmp_path / "out" / MANIFEST_FILE).unlink()  # a folder written before parts were recorded, or by hand
    with pytest.raises(InputError, match="no record of what they were made from"):
        forecast_files(job(tmp_path, "out"))


def test_the_cli_refuses_another_files_folder_in_one_line(tmp_path, capsys):
    write_panel(tmp_path / "panel.parquet", num_series=3, length=72)
    write_panel(tmp_path / "other.parquet", num_series=3, length=72, level=20_000)
    args = ["-p", "4", "-n", "4", "--context-length", "48", "--output-dir", str(tmp_path / "parts")]
    assert main(["forecast", str(tmp_path / "panel.parquet"), *args]) == 0
    assert json.loads((tmp_path / "parts" / MANIFEST_FILE).read_text())["prediction_length"] == 4
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["forecast", str(tmp_path / "other.parquet"), *args])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.count("\n") == 1 and "another input file" in error, error


def _cli_exit(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["forecast", *map(str, args)])
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.startswith("toto forecast: error:") and error.count("\n") == 1, error
    return error


def test_a_forecast_that_cannot_fit_is_refused_before_any_process_starts(tmp_path, capsys):
    write_panel(tmp_path / "panel.parquet", num_series=4, length=72)
    error = _cli_exit([tmp_path / "panel.parquet", "-p", "48", "-n", "100000000", "--output-dir",
                       tmp_path / "parts"], capsys)
    assert "GiB of working memory, over the forecaster's budget of 2.0 GiB: lower --num-samples" in error
    assert not (tmp_path / "parts").exists()  # nothing was forecast, nor a folder made


def test_large_panel_mistakes_are_one_line_errors_before_any_work(tmp_path, capsys):
    write_panel(tmp_path / "panel.parquet", num_series=2, length=72)
    pd.read_parquet(tmp_path / "panel.parquet").rename(columns={"id": "host"}).to_csv(tmp_path / "hosts.csv",
                                                                                      index=False)
    (tmp_path / "a_file").write_text("not a folder")
    panel, parts = tmp_path / "panel.parquet", tmp_path / "parts"
    for args, message in [
        ([tmp_path / "hosts.csv", "--output-dir", parts], "no id column 'id'"),
        ([panel, "--output-dir", tmp_path / "a_file"], "is not a folder"),
        ([panel, "--output-dir", parts, "--device", "cpu"], "leave out --device"),
        ([panel, "--output-dir", parts, "--devices", "0"], "--devices must be a positive integer, got 0"),
        ([panel, "--output-dir", parts, "--series-per-part", "0"], "--series-per-part must be a positive integer"),
    ]:
        assert message in _cli_exit([*args, "-p", "4"], capsys)
    assert not parts.exists()
