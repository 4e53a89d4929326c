"""The official `toto2.configuration` path: `Toto2ModelConfig` is `toto.v2.Toto2Config`; the GluonTS config."""

from toto.inference.toto2_gluonts import Toto2GluonTSModelConfig
from toto.v2.config import Toto2Config as Toto2ModelConfig

__all__ = ["Toto2GluonTSModelConfig", "Toto2ModelConfig"]
