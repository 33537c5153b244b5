"""The decision object: the client's reply and what the conductor must do next."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from barricade.client import ClientInfo
from barricade.replies import Reply

if TYPE_CHECKING:
    from barricade.maps import Route


class Downstream(enum.Enum):
    """What happens to the downstream side of the transaction."""

    KEEP = "keep"  # nothing
    RELAY = "relay"  # forward this RCPT to ``Outcome.route``
    END = "end"  # RSET the transaction (connections stay for the next one)
    ABORT = "abort"  # close the transaction's connections: no dot may reach them


@dataclass
class Outcome:
    """The reply for one event, and what the adapter must do after sending it."""

    reply: Reply | None
    drop: bool = False
    start_tls: bool = False
    sink: bool = False  # a refused client stays connected in the sink state (Flag.SINK)
    downstream: Downstream = Downstream.KEEP
    route: Route | None = None  # with Downstream.RELAY
    client: ClientInfo | None = None  # the session goes on as this client (XCLIENT)
    client_helo: str | None = None  # with ``client``: the HELO name XCLIENT gave, if any
    message: str = ""  # the message's fate at the dot, for the metrics: accept, reject ...
    check: str = ""  # the check whose verdict this is, for the decision log
