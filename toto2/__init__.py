"""Drop-in for the official Toto 2.0 package (`toto-2`, import name `toto2`), implemented in `toto.v2`.

    from toto2 import Toto2Model
    from toto2.configuration import Toto2ModelConfig
"""

from toto.v2 import Toto2Model
from toto.v2.config import Toto2Config as Toto2ModelConfig

__all__ = ["Toto2Model", "Toto2ModelConfig"]
