"""`boom eval` and `boom leaderboard` end to end on the sample dataset, including resuming an interrupted run."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
from boom_fixtures import SHARED_BOOM, write_hourly_table, write_monthly_table, write_series

from boom import forecasters
from boom.cli import main
from boom.data import configurations, load_properties
from boom.evaluate import RESULTS_FILE, run

pytest_plugins = ["boom_fixtures"]  # the sample dataset and tiny checkpoint fixtures

REPO = Path(__file__).resolve().parents[1]
BOOM = Path(sys.executable).with_name("boom")  # the installed console script
PUBLISHED_HEADER = (SHARED_BOOM / "results" / "toto" / "all_results.csv").read_text().splitlines()[0].split(",")
CONFIGS = ["ds-0-30T/Short/short", "ds-1-D/Long/short", "ds-1-D/Long/medium", "ds-1-D/Long/long"]


@pytest.mark.integration
def test_eval_then_leaderboard(boom_data, tiny_toto_checkpoint, tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["eval", "--model", "seasonalnaive", "--data", str(boom_data), "--out", str(out)]) == 0
    assert main(["eval", "--model", "toto", "--checkpoint", str(tiny_toto_checkpoint), "--num-samples", "4",
                 "--context-length", "512", "--data", str(boom_data), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "boom eval toto-tiny-random" in captured.err and "4/4" in captured.err  # the progress bar
    assert "4 configurations evaluated, 0 already done, 0 failed" in captured.out

    toto = pd.read_csv(out / "toto-tiny-random" / RESULTS_FILE)  # named after its checkpoint, not the published toto
    assert list(toto.columns) == PUBLISHED_HEADER
    assert list(toto["dataset"]) == CONFIGS and list(toto["num_variates"]) == [2, 1, 1, 1]
    assert set(toto["checkpoint"]) == {str(tiny_toto_checkpoint)}
    assert set(toto["context_length"]) == {512} and set(toto["num_samples"]) == {4}
    assert toto.filter(like="eval_metrics/").map(math.isfinite).all().all()

    boom = Path(sys.executable).with_name("boom")  # the installed console script
    inputs_before = sorted(out.rglob("*"))
    here = tmp_path / "work"
    here.mkdir()
    done = subprocess.run([str(boom), "leaderboard", str(out), "--by", "term", "domain", "--data", str(boom_data)],
                          capture_output=True, text=True, timeout=300, cwd=here)
    assert done.returncode == 0, done.stderr
    assert "MASE-4-scaled" in done.stdout and "Scaled CRPS by term" in done.stdout
    table = pd.read_csv(here / "leaderboard.csv", index_col="model")  # the working folder, not the inputs
    assert sorted(table.index) == ["seasonalnaive", "toto-tiny-random"]
    assert table.loc["seasonalnaive", "CRPS-4-scaled"] == 1.0
    assert (here / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(out.rglob("*")) == inputs_before

    assert main(["leaderboard", str(out), "--out", str(out / "toto-tiny-random")]) == 2
    assert f"is inside {out}, which this command only reads" in capsys.readouterr().err
    assert sorted(out.rglob("*")) == inputs_before


def test_interrupted_run_resumes_without_redoing_finished_configurations(boom_data, tmp_path, capsys):
    out = tmp_path / "results"
    naive = forecasters.classical("seasonalnaive", forecasters.CLASSICAL["seasonalnaive"])
    built: list[int] = []

    def build_then_interrupt(prediction_length: int, freq: str):
        built.append(prediction_length)
        if len(built) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises in the middle of the third configuration
        return naive.build(prediction_length, freq)

    interrupted = forecasters.Forecaster("seasonalnaive", build_then_interrupt, context_length=naive.context_length)
    configs = configurations(load_properties(boom_data))
    with pytest.raises(KeyboardInterrupt):
        run(interrupted, boom_data, configs, out, progress=False)
    results_file = out / "seasonalnaive" / RESULTS_FILE
    before = results_file.read_text()
    assert list(pd.read_csv(results_file)["dataset"]) == CONFIGS[:2]

    assert main(["eval", "--model", "seasonalnaive", "--data", str(boom_data), "--out", str(out)]) == 0
    assert "2 configurations evaluated, 2 already done, 0 failed" in capsys.readouterr().out
    after = results_file.read_text()
    assert after.startswith(before)  # finished rows untouched, the rest appended
    assert list(pd.read_csv(results_file)["dataset"]) == CONFIGS

    resumed: list[int] = []
    counting = forecasters.Forecaster("seasonalnaive", lambda h, f: resumed.append(h) or naive.build(h, f),
                                      context_length=naive.context_length)
    summary = run(counting, boom_data, configs, out, progress=False)
    assert resumed == [] and summary.skipped == CONFIGS and results_file.read_text() == after


def test_resume_refuses_results_of_other_settings(boom_data, tmp_path, capsys):
    args = ["eval", "--model", "seasonalnaive", "--data", str(boom_data), "--out", str(tmp_path), "--series",
            "ds-0-30T"]
    assert main(args) == 0
    assert main([*args, "--context-length", "96"]) == 2
    assert "Use another --out folder or --name" in capsys.readouterr().err
    assert main([*args, "--context-length", "96", "--name", "naive-96"]) == 0
    assert (tmp_path / "naive-96" / RESULTS_FILE).exists()


def test_failed_configurations_are_reported(tmp_path, capsys):
    (tmp_path / "boom_properties.json").write_text(json.dumps(
        {"ds-5-H": {"domain": ["Database"], "frequency": "Medium", "num_variates": 1, "term": "short"}}))
    assert main(["eval", "--model", "seasonalnaive", "--data", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "failed ds-5-H/Medium/short: FileNotFoundError" in err and "ds-5-H is missing" in err


def test_eval_on_your_own_table_matches_the_same_series_in_the_benchmark_layout(tmp_path, capsys):
    """`boom eval --data table.csv` (long form) scores like the same series written as BOOM series folders."""
    from boom.data import write_hub_folder

    arrivals = pd.read_csv(Path(__file__).resolve().parents[1] / "examples" / "tourist_arrivals_long.csv")
    table = tmp_path / "arrivals.csv"
    arrivals.to_csv(table, index=False)
    folders = tmp_path / "folders"
    properties = {}
    for origin, rows in arrivals.groupby("origin"):
        write_hub_folder(folders / origin, [{"item_id": origin, "start": rows["quarter"].iloc[0], "freq": "Q",
                                             "target": rows["arrivals"].to_numpy(dtype=float)}])
        properties[origin] = {"domain": [""], "frequency": "QS-OCT", "num_variates": 1, "term": "long",
                              "type": "table"}
    (folders / "boom_properties.json").write_text(json.dumps(properties))

    for data_path, out in ((table, tmp_path / "from_table"), (folders, tmp_path / "from_folders")):
        assert main(["eval", "--model", "seasonalnaive", "--data", str(data_path), "--out", str(out),
                     "--terms", "short", "medium", "--no-progress"]) == 0
    assert "8 configurations evaluated" in capsys.readouterr().out
    from_table = pd.read_csv(tmp_path / "from_table" / "seasonalnaive" / RESULTS_FILE).set_index("dataset")
    from_folders = pd.read_csv(tmp_path / "from_folders" / "seasonalnaive" / RESULTS_FILE).set_index("dataset")
    assert sorted(from_table.index) == sorted(f"{o}/QS-OCT/{t}" for o in properties for t in ("short", "medium"))
    metrics = [c for c in from_table.columns if c.startswith("eval_metrics/")]
    pd.testing.assert_frame_equal(from_table.loc[from_folders.index, metrics], from_folders[metrics])

    wide = tmp_path / "japan.parquet"
    arrivals[arrivals["origin"] == "Japan"].drop(columns="origin").to_parquet(wide)
    assert main(["eval", "--model", "seasonalnaive", "--data", str(wide), "--out", str(tmp_path / "wide"),
                 "--terms", "short", "--no-progress"]) == 0
    assert list(pd.read_csv(tmp_path / "wide" / "seasonalnaive" / RESULTS_FILE)["dataset"]) == ["japan/QS-OCT/short"]
    bad = tmp_path / "bad.csv"
    arrivals.assign(arrivals=arrivals["arrivals"].astype(str).where(arrivals.index != 5, "1,5")).to_csv(bad)
    assert main(["eval", "--model", "seasonalnaive", "--data", str(bad), "--out", str(tmp_path / "bad")]) == 2
    assert "is not numeric" in capsys.readouterr().err


def test_a_table_too_short_for_a_term_is_refused_with_the_terms_that_fit(tmp_path, capsys):
    """200 hourly steps leave no history before the medium term's 480-step window: refused before any work, with the
    terms that fit; 500 leave 20 steps, less than the day (24 steps) that seasonal naive repeats."""
    table = write_hourly_table(tmp_path / "newark.csv", 200)
    args = ["eval", "--model", "seasonalnaive", "--data", str(table), "--out", str(tmp_path / "results"),
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(table) in err and "has 200 steps" in err and "--terms short" in err
    assert "medium term" in err and not (tmp_path / "results").exists()
    assert main([*args, "--terms", "short"]) == 0
    assert "1 configurations evaluated, 0 already done, 0 failed" in capsys.readouterr().out

    longer = write_hourly_table(tmp_path / "newark500.csv", 500)
    assert main(["eval", "--model", "autoets", "--data", str(longer), "--out", str(tmp_path / "results"),
                 "--terms", "medium"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 24 steps of history" in err and "a longer history" in err

    # A benchmark folder's series too short for a term fails that configuration alone, saying why.
    data = tmp_path / "boom_data"
    hourly = pd.read_csv(table)
    write_series(data / "ds-9-H", "ds-9-H", pd.Timestamp("2013-01-01 19:00"), "H", hourly["temp"].to_numpy())
    (data / "boom_properties.json").write_text(json.dumps(
        {"ds-9-H": {"domain": ["Infrastructure"], "frequency": "Medium", "num_variates": 1, "term": "long"}}))
    assert main(["eval", "--model", "seasonalnaive", "--data", str(data), "--out", str(tmp_path / "r"),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "failed ds-9-H/Medium/medium: InputError: ds-9-H has 200 steps, too few for the medium term" in err


@pytest.mark.integration  # a subprocess: what a user's terminal shows, under Python's default warning filters
def test_eval_prints_no_warnings(tmp_path):
    """Monthly and quarterly frequencies, UTC timestamps and GluonTS's import print nothing on stderr."""
    monthly = write_monthly_table(tmp_path / "passengers.csv")
    hourly = write_hourly_table(tmp_path / "newark.csv", 200)
    for table, terms in ((monthly, ["short", "medium"]), (hourly, ["short"])):
        done = subprocess.run([str(BOOM), "eval", "--model", "seasonalnaive", "--data", str(table), "--out",
                               str(tmp_path / "results"), "--terms", *terms, "--no-progress"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""


def _readme_boom_commands() -> list[str]:
    section = (REPO / "README.md").read_text().split("\n## BOOM benchmark\n")[1].split("\n## ")[0]
    return [line.strip() for line in section.splitlines() if line.startswith("    boom ")]


@pytest.mark.integration
def test_the_readme_boom_commands_run_in_order(tmp_path):
    """The README's BOOM commands, as written and in order, in one working folder.

    Only what cannot run here is replaced: `boom download` (it needs the Hugging Face Hub) is left out, and the
    download it makes, `~/boom_data`, is one BOOM series' folder and properties (the series' name and properties,
    with 300 public hourly values for its data); the Hub checkpoint `Datadog/Toto-Open-Base-1.0` and the fine-tune
    `path/to/finetune` are folders of the embedded toto-tiny at those paths; `--device cuda` runs on the CPU when
    there is no GPU; `../shared/boom/results` holds the published results.
    """
    import torch

    from boom.data import load_properties

    commands = _readme_boom_commands()
    assert commands[0].startswith("boom download ") and len(commands) == 5
    home, work = tmp_path / "home", tmp_path / "work"
    series = "ds-1627-H"  # hourly, short term, one variate
    write_series(home / "boom_data" / series, series, pd.Timestamp("2013-01-01 19:00"), "H",
                 pd.read_csv(write_hourly_table(tmp_path / "newark.csv", 300))["temp"].to_numpy())
    (home / "boom_data" / "boom_properties.json").write_text(json.dumps({series: load_properties()[series]}))
    for checkpoint in ("Datadog/Toto-Open-Base-1.0", "path/to/finetune"):
        shutil.copytree(REPO / "toto" / "checkpoints" / "toto-tiny", work / checkpoint)
    (tmp_path / "shared" / "boom").mkdir(parents=True)
    (tmp_path / "shared" / "boom" / "results").symlink_to(SHARED_BOOM / "results")
    env = {**os.environ, "HOME": str(home), "PATH": f"{BOOM.parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands[1:]:
        if not torch.cuda.is_available():
            command = command.replace("--device cuda", "--device cpu")
        done = subprocess.run(["bash", "-c", f"{command} --no-progress" if " eval " in command else command],
                              cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}: {done.stderr}"

    assert set(pd.read_csv(work / "results" / "toto" / RESULTS_FILE)["checkpoint"]) == {"Datadog/Toto-Open-Base-1.0"}
    table = pd.read_csv(work / "leaderboard.csv", index_col="model")
    assert {"results/seasonalnaive", "../shared/boom/results/seasonalnaive", "results/toto",
            "../shared/boom/results/toto", "my-finetune", "chronos_2"} <= set(table.index)
    assert table.loc["results/seasonalnaive", "CRPS-1-scaled"] == 1.0
