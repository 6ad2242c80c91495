"""ikev2lib: IKEv2/IPsec for Python.

The wire codec's names are re-exported here: `from ikev2lib import Message, SA, Notify, NotifyType`.
"""

from ikev2lib import wire
from ikev2lib.wire import *  # noqa: F401,F403 - the public codec names, listed in wire.__all__

__all__: list[str] = list(wire.__all__)
__version__ = "0.1.0"
