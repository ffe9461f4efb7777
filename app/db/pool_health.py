"""Which pooled connections are checked with a round trip before use.

SQLAlchemy's ``pool_pre_ping`` sends a statement on every checkout: two round trips of an
uncached chat answer's nine. A connection checked in moments ago is alive unless the server has
closed it since, and a server that restarts or ends a backend closes its socket, which the client
then sees as readable (PostgreSQL's goodbye message, or end of file) at once, without a round trip.
So a connection is pinged only when its socket is readable or it has sat in the pool longer than
``PING_AFTER_IDLE_S`` (a connection dropped silently, by a firewall or a NAT, shows nothing on its
socket). A ping that fails raises ``DisconnectionError``: the pool drops that connection and checks
out another, as with ``pool_pre_ping`` (``tests/integration/db/test_pool_health.py``).
"""

from __future__ import annotations

import select
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Engine

PING_AFTER_IDLE_S = 5.0
_CHECKED_IN_AT = "checked_in_at"


def _socket_readable(dbapi_connection: Any) -> bool:
    """Whether the idle connection's socket has something to read: for a connection between
    transactions, the server going away (or, rarely, a notice: a needless ping, not a wrong one)."""
    try:
        poller = select.poll()  # not select.select: a busy worker's descriptors pass 1024
        poller.register(dbapi_connection.driver_connection.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))
    except Exception:  # closed, or no socket to look at: let the ping decide
        return True


def ping_when_in_doubt(
    engine: Engine, *, idle_s: float = PING_AFTER_IDLE_S, clock: Callable[[], float] = time.monotonic
) -> None:
    """Install the checkout check on ``engine`` (the sync engine of an ``AsyncEngine``), whose pool
    must not pre-ping as well."""
    pool = engine.pool

    @event.listens_for(pool, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = clock()

    @event.listens_for(pool, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checked_in_at = record.info.pop(_CHECKED_IN_AT, None)
        if checked_in_at is None:  # just connected
            return
        if clock() - checked_in_at <= idle_s and not _socket_readable(dbapi_connection):
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise exc.DisconnectionError(f"pooled connection failed its ping: {error}") from error
