"""Toto 2.0 (Datadog, 2026): single-pass quantile forecasting with a u-muP variate-time transformer.

Modules, one concept each: `config` (the config.json fields), `scaler` (causal patch std scaler), `rope` (partial
rotary / xPos positions), `scaled` (unit-scaled linear, norm, residual and MLP blocks), `attention` (grouped-query
QK-norm attention), `kv_cache`, `transformer` (the variate-time decoder), `model` (`Toto2Model`: forward,
`forecast`, checkpoints) and `checkpoint` (finding and reading weights). The official import paths live in the
`toto2` alias package.
"""

from .config import QUANTILE_KNOTS, Toto2Config
from .model import Toto2Model, Toto2Output

__all__ = ["QUANTILE_KNOTS", "Toto2Config", "Toto2Model", "Toto2Output"]
