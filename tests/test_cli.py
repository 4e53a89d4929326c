"""`toto forecast` end to end: the console script, wide and long files, outputs, plots, bad files."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from toto.cli import main
from toto.model import checkpoint

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
FAST = ["--num-samples", "8", "--context-length", "256"]


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
    expected = pd.date_range("2000-08-28 00:00", periods=24, freq="30min")  # the file ends 2000-08-27 23:30
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
    table.insert(2, "demand_gw", table["demand_mw"] / 1000)  # a second variate of the same series
    table.to_csv(tmp_path / "two.csv", index=False)
    assert main(["forecast", str(tmp_path / "two.csv"), "-p", "3", *FAST]) == 0

    printed = capsys.readouterr()
    forecast = pd.read_csv(io.StringIO(printed.out))
    assert forecast.groupby("variate").size().to_dict() == {"demand_gw": 3, "demand_mw": 3}
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
        (["--num-samples", "0"], "num_samples must be at least 1"),
        (["--quantiles", "0.5,1"], "strictly between 0 and 1"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main(["forecast", demand, "-p", "4", *args])
        assert exit_.value.code == 2
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error
