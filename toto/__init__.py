"""Toto: a decoder-only multivariate time-series foundation model, drop-in compatible with Toto 1.0.

Short aliases for the official import paths:
    from toto import Toto, TotoForecaster, MaskedTimeseries
"""

from .data.util.dataset import MaskedTimeseries
from .inference.forecaster import Forecast, TotoForecaster
from .model.config import TotoConfig
from .model.toto import Toto

__all__ = ["Forecast", "MaskedTimeseries", "Toto", "TotoConfig", "TotoForecaster"]
