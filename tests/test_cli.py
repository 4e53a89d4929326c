"""`toto forecast` end to end: the console script, wide and long files, outputs, plots, bad files."""

import pytest
from partial_install import missing

pytest.importorskip("pandas", reason=missing("cli"))

import io
import json
import os
import re
import subprocess
import sys
import tracemalloc
from pathlib import Path

import matplotlib.image
import pandas as pd
import torch

from toto import checkpoint_io as checkpoint
from toto.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["--num-samples", "8", "--context-length", "256"]


@pytest.mark.integration
def test_console_script_forecasts_a_wide_csv_and_draws_a_png(tmp_path):
    output, plot = tmp_path / "forecast.csv", tmp_path / "forecast.png"
    script = Path(sys.executable).parent / "toto"
    run = subprocess.run(
        [
            script,
            "forecast",
            EXAMPLES / "electricity_demand.csv",
            "--prediction-length",
            "24",
            *FAST,
            "--output",
            output,
            "--plot",
            plot,
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},  # the embedded model needs no network
    )
    assert run.returncode == 0, run.stderr
    assert (
        "model     toto-tiny (embedded" in run.stderr and "wide table, 1 series x 1 variate(s)" in run.stderr
    )
    status = json.loads((checkpoint.EMBEDDED_DIR / "toto-tiny" / "training_summary.json").read_text())[
        "status"
    ]
    assert ("WARNING: random weights" in run.stderr) == (status == "random-init")

    forecast = pd.read_csv(output, parse_dates=["timestamp"])
    assert list(forecast.columns) == [
        "variate",
        "timestamp",
        "mean",
        "median",
        *[f"0.{i}" for i in range(1, 10)],
    ]
    history = pd.DatetimeIndex(pd.read_csv(EXAMPLES / "electricity_demand.csv", parse_dates=["timestamp"])["timestamp"])
    expected = pd.date_range(history[-1], periods=25, freq=pd.infer_freq(history))[1:]  # continues the file
    assert (pd.DatetimeIndex(forecast["timestamp"]) == expected).all()
    image = matplotlib.image.imread(plot)
    assert image.shape[0] > 100 and image.shape[1] > 300 and image[..., :3].std() > 0.05  # a drawn figure


def test_long_csv_to_parquet_with_chosen_quantiles(tmp_path, capsys):
    output = tmp_path / "out" / "forecast.parquet"
    code = main(
        [
            "forecast",
            str(EXAMPLES / "tourist_arrivals_long.csv"),
            "-p",
            "4",
            "-q",
            "0.05,0.5,0.95",
            *FAST,
            "-o",
            str(output),
            "--plot",
            str(tmp_path / "long.png"),
        ]
    )

    assert code == 0
    forecast = pd.read_parquet(output)
    assert list(forecast.columns) == ["origin", "variate", "quarter", "mean", "median", "0.05", "0.5", "0.95"]
    assert sorted(forecast["origin"].unique()) == ["Japan", "NZ", "UK", "US"]
    for _, rows in forecast.groupby("origin"):
        assert list(rows["quarter"]) == list(pd.date_range("2012-10-01", periods=4, freq="QS"))
    assert "long table, 4 series x 1 variate(s)" in capsys.readouterr().err
    assert matplotlib.image.imread(tmp_path / "long.png").shape[0] > 100


def test_without_output_the_forecast_goes_to_stdout(tmp_path, capsys):
    table = pd.read_csv(EXAMPLES / "electricity_demand.csv").tail(200)
    (name,) = table.columns.drop("timestamp")
    table.insert(2, "in_thousands", table[name] / 1000)  # a second variate of the same series
    table.to_csv(tmp_path / "two.csv", index=False)
    assert main(["forecast", str(tmp_path / "two.csv"), "-p", "3", *FAST]) == 0

    printed = capsys.readouterr()
    forecast = pd.read_csv(io.StringIO(printed.out))
    assert forecast.groupby("variate").size().to_dict() == {"in_thousands": 3, name: 3}
    assert "wrote" not in printed.err


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("timestamp,host\n2024-01-01,a\n2024-01-02,b\n2024-01-03,c\n", "no numeric column to forecast"),
        ("timestamp,cpu\n2024-01-01,1\nnot a date,2\n2024-01-03,3\n", "'not a date' in row 2"),
        ("timestamp,cpu\n2024-01-01,1\n2024-01-02,2\n2024-01-02,3\n2024-01-03,4\n", "duplicate timestamp"),
        ("timestamp,cpu\n2024-01-01,1\n2024-01-02,2\n", "only 2 time step"),
        ("timestamp,cpu\n" + "".join(f"2024-01-01T00:00:00.{i}00Z,{i}\n" for i in range(9)),
         "2024-01-01 00:00:00.100000+00:00 has a fraction of a second"),
        ("", "the file is empty"),
    ],
)
def test_bad_files_exit_with_a_clear_error(tmp_path, capsys, rows, message):
    path = tmp_path / "bad.csv"
    path.write_text(rows)
    with pytest.raises(SystemExit) as exit_:
        main(["forecast", str(path), "-p", "4"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("toto forecast: error:") and message in error
    assert "Traceback" not in error


def test_a_bad_checkpoint_or_setting_is_reported_without_traceback(tmp_path, capsys):
    demand = str(EXAMPLES / "electricity_demand.csv")
    for args, message in [
        (["--checkpoint", str(tmp_path / "nowhere")], "cannot load the checkpoint"),
        (["--num-samples", "0"], "num_samples must be a positive integer"),
        (["--quantiles", "0.5,1"], "strictly between 0 and 1"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["forecast", demand, "-p", "4", *args])
        assert exit_.value.code == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error


def _forecast_exit(args, capsys):
    """Run `toto forecast ARGS`; return the one-line error of its exit status 2."""
    with pytest.raises(SystemExit) as exit_:
        main(["forecast", *map(str, args)])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("toto forecast: error:") and "Traceback" not in error and error.count("\n") == 1
    return error


def test_output_or_plot_on_the_input_is_refused_under_any_spelling(tmp_path, capsys, monkeypatch):
    source = tmp_path / "in.csv"
    source.write_bytes((EXAMPLES / "electricity_demand.csv").read_bytes())
    original = source.read_bytes()
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(source)
    os.link(source, tmp_path / "hard.csv")
    monkeypatch.chdir(tmp_path)
    spellings = ["in.csv", "./in.csv", tmp_path / "sub" / ".." / "in.csv", tmp_path / "link.csv", "hard.csv"]
    for spelling in spellings:
        error = _forecast_exit([source, "-p", "4", *FAST, "--output", spelling], capsys)
        assert "is the input file" in error and "would destroy it" in error
    error = _forecast_exit(["in.csv", "-p", "4", *FAST, "--plot", source], capsys)
    assert "--plot" in error and "is the input file" in error
    assert source.read_bytes() == original


def test_unwritable_outputs_bad_device_and_huge_horizon_are_one_line_errors(tmp_path, capsys):
    demand = EXAMPLES / "electricity_demand.csv"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    cases = [
        (["--output", a_file / "forecast.csv"], f"cannot write in {a_file}"),
        (["--output", tmp_path], "is a folder: give a file name"),
        (["--device", "bogus"], "--device 'bogus' is not a device: use cpu, cuda, cuda:N or mps"),
        (["--device", "meta"], "--device 'meta' is not a device"),
        (["-p", "1000000"], "--prediction-length 1000000 is over the ceiling of 8192 steps"),
        (["-p", "8192", "--num-samples", "10000000"], "GiB of working memory, over the forecaster's budget"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--device", "cuda"], "this machine has no CUDA GPU"))
    for args, message in cases:
        error = _forecast_exit([demand, "-p", "4", *FAST, *args], capsys)
        assert message in error, error


def test_values_the_model_cannot_read_are_refused_and_text_columns_named(tmp_path, capsys):
    days = pd.date_range("2024-01-01", periods=40, freq="D")
    values = pd.Series(range(40), dtype=float)
    path = tmp_path / "table.csv"
    pd.DataFrame({"timestamp": days, "cpu": values.where(values != 7, 1e308)}).to_csv(path, index=False)
    assert "holds 1e+308 in row 8" in _forecast_exit([path, "-p", "4", *FAST], capsys)
    pd.DataFrame({"timestamp": days, "cpu": values.astype(str).where(values != 3, "1,5")}).to_csv(path, index=False)
    assert "column 'cpu' is not numeric (column 'cpu' holds non-numeric values such as '1,5' in row 4)" in (
        _forecast_exit([path, "-p", "4", *FAST], capsys))
    # pandas reads 'n/a' as a missing value: a column of nothing else has no values to forecast from
    pd.DataFrame({"timestamp": days, "cpu": values, "mem": "n/a"}).to_csv(path, index=False)
    assert "column(s) ['mem'] have no values" in _forecast_exit([path, "-p", "4", *FAST], capsys)

    pd.DataFrame({"host": "web-1", "timestamp": days, "note": "ok", "cpu": values}).to_csv(path, index=False)
    assert main(["forecast", str(path), "-p", "4", *FAST, "--id-column", "host", "--output",
                 str(tmp_path / "out.csv")]) == 0
    assert "ignored   column(s) note: not numeric" in capsys.readouterr().err


def test_the_summary_quoted_in_the_docs_is_what_make_demo_prints(tmp_path, capsys, monkeypatch):
    """docs/cli.md quotes the summary of `make demo`: the same command must print it (but for the seconds)."""
    monkeypatch.chdir(EXAMPLES.parent)
    text = (EXAMPLES.parent / "docs" / "cli.md").read_text()
    quoted = text.split("prints a summary\nlike this one (to stderr):\n\n```\n", 1)[1].split("```", 1)[0]
    output, plot = tmp_path / "demo_forecast.csv", tmp_path / "demo_forecast.png"
    assert main(["forecast", "examples/electricity_demand.csv", "--prediction-length", "48",
                 "--output", str(output), "--plot", str(plot)]) == 0
    printed = capsys.readouterr().err.replace(str(tmp_path) + "/", "")

    def without_seconds(block: str) -> list[str]:
        return [re.sub(r", [\d.]+ s$", ", N s", line) for line in block.strip().splitlines()]

    assert without_seconds(printed) == without_seconds(quoted), f"update docs/cli.md with:\n{printed}"


def test_the_table_quoted_in_the_docs_is_what_the_command_writes(capsys, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parent)
    text = (EXAMPLES.parent / "docs" / "cli.md").read_text()
    block = text.split("```\n$ toto forecast examples/tourist_arrivals_long.csv", 1)[1].split("```", 1)[0]
    command, *quoted = block.strip().splitlines()
    assert command.strip() == "-p 8 -q 0.1,0.5,0.9 | head -3"
    assert main(["forecast", "examples/tourist_arrivals_long.csv", "-p", "8", "-q", "0.1,0.5,0.9"]) == 0
    written = capsys.readouterr().out.splitlines()[:3]
    # The same table, up to float32 rounding: another CPU's kernels may sum in another order (a last-digit change).
    update = "update docs/cli.md with:\n" + "\n".join(written)
    text_cells, numbers = _cells(written)
    quoted_text_cells, quoted_numbers = _cells(quoted)
    assert text_cells == quoted_text_cells, update
    assert numbers == pytest.approx(quoted_numbers, rel=1e-5), update


def _cells(lines: list[str]) -> tuple[list[str], list[float]]:
    """A CSV block's cells: its text (header, names, dates; numbers as a placeholder) and its numbers."""
    text, numbers = [], []
    for cell in (cell for line in lines for cell in line.split(",")):
        try:
            numbers.append(float(cell))
            text.append("<number>")
        except ValueError:
            text.append(cell)
    return text, numbers


def test_a_tiny_csv_of_a_huge_grid_is_refused_at_once(tmp_path, capsys):
    path = tmp_path / "sparse.csv"  # 82 bytes: 63 million steps of 1 s from the first timestamp to the last
    path.write_text("timestamp,value\n2022-01-01 00:00:00,1\n2022-01-01 00:00:01,2\n2024-01-01 00:00:00,3\n")
    tracemalloc.start()
    try:
        error = _forecast_exit([path, "-p", "3"], capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "3 rows spread over 63072001 steps of s" in error and peak < 20 * 2**20


def test_offsets_changing_at_a_dst_switch_and_dates_before_1677_are_forecast(tmp_path, capsys):
    paris = pd.date_range("2024-03-29", "2024-04-01", freq="h", tz="Europe/Paris")  # +01:00, then +02:00
    pd.DataFrame({"timestamp": [t.isoformat() for t in paris], "load": range(len(paris))}).to_csv(
        tmp_path / "dst.csv", index=False)
    assert main(["forecast", str(tmp_path / "dst.csv"), "-p", "2", *FAST, "-o", str(tmp_path / "dst_out.csv")]) == 0
    forecast = pd.read_csv(tmp_path / "dst_out.csv")
    assert list(forecast["timestamp"]) == ["2024-03-31 23:00:00+00:00", "2024-04-01 00:00:00+00:00"]  # in UTC

    (tmp_path / "old.csv").write_text("date,value\n" + "".join(f"{1000 + i}-01-01,{i % 7}\n" for i in range(40)))
    assert main(["forecast", str(tmp_path / "old.csv"), "-p", "2", *FAST, "-o", str(tmp_path / "old_out.csv"),
                 "--plot", str(tmp_path / "old.png")]) == 0
    assert list(pd.read_csv(tmp_path / "old_out.csv")["date"]) == ["1040-01-01", "1041-01-01"]
    assert (tmp_path / "old.png").stat().st_size > 0


NO_MODEL = "no-such-model"  # a checkpoint that cannot load: an error naming it means the outputs passed their checks


def test_outputs_that_cannot_be_written_are_refused_before_the_model_loads(tmp_path, capsys):
    demand = EXAMPLES / "electricity_demand.csv"
    (tmp_path / "full.csv").symlink_to("/dev/full")  # a device that refuses every write (ENOSPC)
    for args, message in [
        (["-o", tmp_path / "out.xlsx"], f"{tmp_path / 'out.xlsx'}: unknown output type; use a .csv or .parquet"),
        (["--plot", tmp_path / "plot.xlsx"], "--plot format 'xlsx' is not supported"),
        (["-o", tmp_path / "full.csv"], "is not a regular file"),
        (["--plot", "/dev/full"], "--plot /dev/full is not a regular file"),
    ]:
        error = _forecast_exit([demand, "-p", "4", *FAST, "-c", NO_MODEL, *args], capsys)
        assert message in error and NO_MODEL not in error, error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.csv"]


def test_the_write_probe_leaves_what_a_user_wrote_as_it_was(tmp_path, capsys):
    existing = tmp_path / "forecast.csv"
    existing.write_text("a table the user wrote\n")
    before = existing.stat()
    error = _forecast_exit([EXAMPLES / "electricity_demand.csv", "-p", "4", "-c", NO_MODEL, "-o", existing,
                            "--plot", tmp_path / "new" / "plot.png"], capsys)
    assert "cannot load the checkpoint" in error  # both outputs passed their checks
    assert existing.read_text() == "a table the user wrote\n"
    assert (existing.stat().st_mtime_ns, existing.stat().st_size) == (before.st_mtime_ns, before.st_size)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecast.csv"]  # no probe file left, no folder made


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_out_of_range_is_a_one_line_error(seed, capsys):
    error = _forecast_exit([EXAMPLES / "electricity_demand.csv", "-p", "4", *FAST, "--seed", seed], capsys)
    assert f"seed must be an integer from 0 to 4294967295, got {seed}" in error


@pytest.mark.parametrize("flag", [["--devices", "2"], ["--series-per-part", "8"], ["--accelerator", "cuda"]])
def test_large_panel_flags_without_output_dir_are_refused(flag, capsys):
    error = _forecast_exit([EXAMPLES / "electricity_demand.csv", "-p", "4", *FAST, *flag], capsys)
    assert f"{flag[0]} applies to the large-panel mode: add --output-dir DIR" in error


def _tiny_folder(tmp_path, **config):
    """A copy of the embedded toto-tiny whose config.json has `config`'s values."""
    folder = tmp_path / "model"
    folder.mkdir()
    source = checkpoint.EMBEDDED_DIR / "toto-tiny"
    (folder / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes())
    values = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**values, **config}))
    return folder


def _toto2_folder(tmp_path, **config):
    """A real Toto 2.0 checkpoint (a tiny config with random weights) whose config.json has `config`'s values."""
    from toto.v2.config import Toto2Config
    from toto.v2.model import Toto2Model

    folder = Toto2Model(Toto2Config.tiny()).save_pretrained(tmp_path / "model2")
    values = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**values, **config}))
    return folder


@pytest.mark.parametrize(("family", "key"), [("Toto 1.0", "embed_dim"), ("Toto 2.0", "d_model")])
def test_a_config_too_large_for_this_machine_is_refused_before_any_tensor(tmp_path, capsys, family, key):
    make = _tiny_folder if family == "Toto 1.0" else _toto2_folder
    folder = make(tmp_path, **{key: 2**40})
    error = _forecast_exit([EXAMPLES / "electricity_demand.csv", "-p", "4", *FAST, "-c", folder], capsys)
    assert f"{folder / 'config.json'}: a model of {key} {2**40}" in error and "GiB of memory" in error, error
    from toto.pipeline import ForecastPipeline

    with pytest.raises(ValueError, match=f"{key} {2**40}"):
        ForecastPipeline.from_pretrained(folder)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("embed_dim", 0, "'embed_dim' must be at least 1, got 0"),
    ("embed_dim", 128.5, "'embed_dim' must be int, got 128.5"),
    ("num_layers", -3, "'num_layers' must be at least 1, got -3"),
    ("mlp_hidden_dim", "256", "'mlp_hidden_dim' must be int, got '256'"),
])
def test_non_positive_or_non_integer_sizes_are_one_line_errors(tmp_path, capsys, key, value, message):
    folder = _tiny_folder(tmp_path, **{key: value})
    error = _forecast_exit([EXAMPLES / "electricity_demand.csv", "-p", "4", *FAST, "-c", folder], capsys)
    assert message in error, error


def test_an_unknown_checkpoint_gets_its_advice_once(tmp_path, capsys):
    error = _forecast_exit([EXAMPLES / "electricity_demand.csv", "-p", "4", "-c", tmp_path / "nowhere"], capsys)
    assert "cannot load the checkpoint" in error and "nowhere" in error
    assert error.count("Hugging Face") == 1 and error.count("config.json") == 1, error
