"""The leaderboard reproduces the published `boom_leaderboard.csv` from the published per-configuration results."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from boom_fixtures import SHARED_BOOM

from boom import leaderboard
from boom.cli import main


@pytest.fixture(scope="module")
def published_scores() -> pd.DataFrame:
    return leaderboard.score(leaderboard.load_results(SHARED_BOOM / "results"))


def test_reproduces_the_published_leaderboard(published_scores):
    published = pd.read_csv(SHARED_BOOM / "boom_leaderboard.csv", index_col="model")
    table = leaderboard.leaderboard(published_scores)
    assert list(table.columns) == list(published.columns)
    assert sorted(table.index) == sorted(published.index)
    table = table.loc[published.index]
    for column in published.columns:
        if column.startswith("Rank"):
            np.testing.assert_allclose(table[column], published[column], atol=0.1, err_msg=column)
        else:  # to the printed precision
            np.testing.assert_array_equal(table[column].map(leaderboard.format_number).astype(float),
                                          published[column], err_msg=column)


def test_published_order_is_what_the_recovery_script_finds(published_scores):
    published = pd.read_csv(SHARED_BOOM / "boom_leaderboard.csv", index_col="model")
    recovered = leaderboard.recover_tie_order(published_scores, published)
    assert recovered == [*leaderboard.PUBLISHED_ORDER, leaderboard.BASELINE]
    # The ranks depend on the order: reversed, the tie-breaking no longer reproduces the published ones.
    reversed_order = [*reversed(leaderboard.PUBLISHED_ORDER), leaderboard.BASELINE]
    table = leaderboard.leaderboard(leaderboard.score(leaderboard.load_results(SHARED_BOOM / "results"),
                                                      order=reversed_order))
    rank = "Rank-663-unscaled"
    assert not np.array_equal(table.loc[published.index, rank].round(3), published[rank])


def test_scaling_and_parts(published_scores):
    scaled = published_scores[published_scores["part"] == "scaled"]
    naive = scaled[scaled["model"] == leaderboard.BASELINE]
    np.testing.assert_allclose(naive[["point", "crps"]], 1.0)  # seasonal naive divided by itself
    unscaled_series = set(published_scores.loc[published_scores["part"] == "unscaled", "series"])
    assert set(leaderboard.low_variance_series()) <= unscaled_series
    assert published_scores.groupby("config")["rank"].apply(lambda r: sorted(r) == list(range(1, 24))).all()


def test_breakdowns(published_scores):
    by_term = leaderboard.breakdown(published_scores, "term")
    assert list(by_term.columns) == ["short", "medium", "long"] and by_term.index[0] == "toto_2.0_2.5b"
    np.testing.assert_allclose(by_term.loc[leaderboard.BASELINE], 1.0)
    by_domain = leaderboard.breakdown(published_scores, "domain")
    assert set(by_domain.columns) == {"Application Usage", "Database", "Infrastructure", "Networking", "Security"}
    assert (by_domain.loc["toto"] < by_domain.loc["autoets"]).all()
    with pytest.raises(ValueError, match="Unknown breakdown"):
        leaderboard.breakdown(published_scores, "color")


def test_shifted_geometric_mean():
    assert leaderboard.shifted_gmean([1.0, 4.0]) == pytest.approx(2.0, abs=1e-5)
    assert leaderboard.shifted_gmean([0.0, 0.0]) == pytest.approx(0.0, abs=1e-12)


def test_requires_seasonal_naive_and_shared_configurations(tmp_path):
    results = leaderboard.load_results(SHARED_BOOM / "results")
    with pytest.raises(ValueError, match="boom eval --model seasonalnaive"):
        leaderboard.score({"toto": results["toto"]})
    disjoint = {"toto": results["toto"].iloc[:10], leaderboard.BASELINE: results[leaderboard.BASELINE].iloc[10:20]}
    with pytest.raises(ValueError, match="share no configuration"):
        leaderboard.score(disjoint)
    with pytest.raises(FileNotFoundError, match="all_results.csv"):
        leaderboard.load_results(tmp_path)


def _copy_published(root: Path, *models: str) -> Path:
    """A results folder holding copies of published results, for a user's own runs (or mistakes) to stand in."""
    for model in models:
        (root / model).mkdir(parents=True)
        shutil.copy(SHARED_BOOM / "results" / model / "all_results.csv", root / model / "all_results.csv")
    return root


def _refusal(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line, no traceback
    return err


def test_impossible_scores_are_refused_with_the_file_column_and_value(tmp_path, capsys):
    results = _copy_published(tmp_path / "results", "seasonalnaive", "toto")
    toto = results / "toto" / "all_results.csv"
    frame = pd.read_csv(toto)
    frame.assign(**{leaderboard.CRPS: -1.0}).to_csv(toto, index=False)
    err = _refusal(["leaderboard", str(results), "--out", str(tmp_path)], capsys)
    assert str(toto) in err and leaderboard.CRPS in err and "-1" in err and "cannot be negative" in err

    frame.assign(**{leaderboard.MASE: frame[leaderboard.MASE].astype(str).where(frame.index != 3, "0.5x")}).to_csv(
        toto, index=False)
    err = _refusal(["leaderboard", str(results), "--out", str(tmp_path)], capsys)
    assert str(toto) in err and leaderboard.MASE in err and "'0.5x'" in err and frame["dataset"][3] in err

    frame.assign(**{leaderboard.CRPS: np.nan}).to_csv(toto, index=False)  # NaN everywhere: nothing to fill it with
    err = _refusal(["leaderboard", str(results), "--out", str(tmp_path)], capsys)
    assert "'toto'" in err and leaderboard.CRPS in err and "no finite value" in err
    assert not (tmp_path / "leaderboard.csv").exists()


def test_a_file_without_a_metric_column_or_with_other_delimiters_is_named(tmp_path, capsys):
    results = _copy_published(tmp_path / "results", "seasonalnaive", "toto")
    toto = results / "toto" / "all_results.csv"
    frame = pd.read_csv(toto)
    frame.drop(columns=leaderboard.CRPS).to_csv(toto, index=False)
    err = _refusal(["leaderboard", str(results), "--out", str(tmp_path)], capsys)
    assert str(toto) in err and f"no column {leaderboard.CRPS!r}" in err and "boom eval" in err

    frame.to_csv(toto, index=False, sep=";")
    err = _refusal(["leaderboard", str(results), "--out", str(tmp_path)], capsys)
    assert str(toto) in err and "not comma-separated" in err and "';'" in err


def test_a_model_in_two_folders_is_kept_once_per_folder(tmp_path, capsys):
    """Your own `results/seasonalnaive` and `results/toto` next to the published ones: both shown, by folder; the
    first folder's seasonal naive is the baseline."""
    mine = _copy_published(tmp_path / "results", "seasonalnaive", "toto")
    results = leaderboard.load_results(mine, SHARED_BOOM / "results")
    assert len(results) == 25
    assert {str(mine / "toto"), str(SHARED_BOOM / "results" / "toto"), "chronos_2"} <= set(results)
    table = leaderboard.leaderboard(leaderboard.score(results))
    assert table.loc[str(mine / "seasonalnaive"), "CRPS-6750-scaled"] == 1.0
    np.testing.assert_array_equal(table.loc[str(mine / "toto")].filter(like="CRPS"),
                                  table.loc[str(SHARED_BOOM / "results" / "toto")].filter(like="CRPS"))

    assert main(["leaderboard", str(mine), str(SHARED_BOOM / "results"), "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert f"scaled by {mine / 'seasonalnaive'}" in captured.err
    assert str(mine / "toto") in pd.read_csv(tmp_path / "leaderboard.csv", index_col="model").index
    err = _refusal(["leaderboard", str(mine), f"{mine}/", "--out", str(tmp_path)], capsys)
    assert "given twice" in err
