"""The built-in dev CSMS: an OCPP 1.6J central system on the `ocpp` package.

The back office for `make sim` (`python -m tools.csms`, see README.md) and the
real peer the firmware tests talk to (`CsmsServer`, pytest fixture `csms`).
"""

from .backoffice import CP_ACTIONS, CSMS_ACTIONS, NO_REPLY, BackOffice, Reply, call_error
from .chargepoint import CallErrorReceived, NotConnected
from .recorder import (CALL, CALLERROR, CALLRESULT, CONNECT, DISCONNECT, IN, INVALID, OFFLINE,
                       ONLINE, OUT, REFUSED, Message)
from .server import CsmsServer

__all__ = ["CsmsServer", "Reply", "NO_REPLY", "call_error", "BackOffice", "CallErrorReceived",
           "NotConnected", "Message", "CP_ACTIONS", "CSMS_ACTIONS", "CALL", "CALLRESULT",
           "CALLERROR", "INVALID", "CONNECT", "DISCONNECT", "REFUSED", "OFFLINE", "ONLINE",
           "IN", "OUT"]
