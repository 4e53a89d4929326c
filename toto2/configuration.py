"""The official `toto2.configuration` path: `Toto2ModelConfig` is `toto.v2.Toto2Config`."""

from toto.v2.config import Toto2Config as Toto2ModelConfig

__all__ = ["Toto2ModelConfig"]
