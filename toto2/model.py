"""The official `toto2.model` path: `Toto2Model` is `toto.v2.Toto2Model`; the GluonTS wrapper."""

from toto.inference.toto2_gluonts import Toto2GluonTSModel
from toto.v2.model import Toto2Model

__all__ = ["Toto2GluonTSModel", "Toto2Model"]
