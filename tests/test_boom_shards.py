"""`boom eval --devices N`: configurations dealt to N Lightning Fabric processes (2 spawned CPU processes here),
each rank appending to its own part, merged into the published `all_results.csv` format; resumable from the
parts an interrupted run leaves."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))

from boom_fixtures import SHARED_BOOM

from boom.cli import main
from boom.evaluate import PARTS_FOLDER, RESULTS_FILE

pytestmark = pytest.mark.integration  # starts processes

pytest_plugins = ["boom_fixtures"]  # the sample dataset and tiny checkpoint fixtures

PUBLISHED_HEADER = (SHARED_BOOM / "results" / "toto" / "all_results.csv").read_text().splitlines()[0]


def test_two_processes_write_the_results_of_one(boom_data, tiny_toto_checkpoint, tmp_path, capsys):
    args = ["eval", "--model", "toto", "--checkpoint", str(tiny_toto_checkpoint), "--num-samples", "4",
            "--context-length", "512", "--seed", "3", "--data", str(boom_data), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two"), "--devices", "2"]) == 0
    assert "4 configurations evaluated, 0 already done, 0 failed" in capsys.readouterr().out
    one = (tmp_path / "one" / "toto-tiny-random" / RESULTS_FILE).read_text()
    two = (tmp_path / "two" / "toto-tiny-random" / RESULTS_FILE).read_text()
    assert two.splitlines()[0] == PUBLISHED_HEADER
    assert len(two.splitlines()) == 5
    assert two == one  # same rows, same order, same numbers: each configuration samples from its own seed
    assert not (tmp_path / "two" / "toto-tiny-random" / PARTS_FOLDER).exists()


@pytest.mark.parametrize("devices", ["1", "2"])
def test_a_run_resumes_from_the_parts_an_interrupted_sharded_run_left(boom_data, tmp_path, capsys, devices):
    args = ["eval", "--model", "seasonalnaive", "--data", str(boom_data), "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    whole = (tmp_path / "whole" / "seasonalnaive" / RESULTS_FILE).read_text()
    header, *rows = whole.splitlines(keepends=True)
    # Killed after rank 1 had finished the second configuration and nothing else was written.
    parts = tmp_path / "resumed" / "seasonalnaive" / PARTS_FOLDER
    parts.mkdir(parents=True)
    (parts / "rank-001.csv").write_text(header + rows[1])
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "resumed"), "--devices", devices]) == 0
    assert "3 configurations evaluated, 1 already done, 0 failed" in capsys.readouterr().out
    assert (tmp_path / "resumed" / "seasonalnaive" / RESULTS_FILE).read_text() == whole
    assert not parts.exists()


def test_sharded_run_refuses_results_of_other_settings_with_the_error_itself(boom_data, tmp_path, capfd):
    args = ["eval", "--model", "seasonalnaive", "--data", str(boom_data), "--out", str(tmp_path), "--no-progress",
            "--series", "ds-0-30T"]
    assert main(args) == 0
    assert main([*args, "--context-length", "96", "--devices", "2"]) == 2
    err = capfd.readouterr().err  # the spawned processes' too
    assert "holds results of seasonalnaive with checkpoint/context/samples" in err
    assert "Using `json`-module" not in err  # GluonTS's import notice, which each spawned process would print
