"""The official `toto2.model` path: `Toto2Model` is `toto.v2.Toto2Model`."""

from toto.v2.model import Toto2Model

__all__ = ["Toto2Model"]
