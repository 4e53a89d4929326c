"""Drop-in for the official Toto 2.0 package (`toto-2`, import name `toto2`), implemented in `toto.v2`.

    from toto2 import Toto2Model
    from toto2.configuration import Toto2ModelConfig
    from toto2 import Toto2GluonTSModel, Toto2GluonTSModelConfig
"""

from toto.inference.toto2_gluonts import Toto2GluonTSModel, Toto2GluonTSModelConfig
from toto.v2 import Toto2Model
from toto.v2.config import Toto2Config as Toto2ModelConfig

__all__ = ["Toto2GluonTSModel", "Toto2GluonTSModelConfig", "Toto2Model", "Toto2ModelConfig"]
