"""The leaderboard reproduces the published `boom_leaderboard.csv` from the published per-configuration results."""

from __future__ import annotations

import pytest
from partial_install import missing

pytest.importorskip("gluonts.torch", reason=missing("boom"))

import numpy as np
import pandas as pd
from boom_fixtures import SHARED_BOOM

from boom import leaderboard


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
