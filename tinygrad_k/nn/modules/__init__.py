"""Every layer, by kind, as ``torch.nn.modules``: ``module`` (Module, Parameter),
``container``, ``linear``, ``conv``, ``pooling``, ``activation``, ``normalization``,
``dropout``, ``rnn``, ``sparse`` (Embedding), ``loss``, ``flatten``."""
from .activation import *  # noqa: F401,F403
from .container import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .flatten import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .module import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
from .sparse import *  # noqa: F401,F403
from . import (activation, container, conv, dropout, flatten, linear, loss, module,
               normalization, pooling, rnn, sparse)

__all__ = [name for m in (module, container, linear, conv, pooling, activation, normalization,
                          dropout, rnn, sparse, loss, flatten) for name in m.__all__]
