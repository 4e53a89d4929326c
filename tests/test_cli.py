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
