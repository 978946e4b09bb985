"""The HTTP server's session limits: their defaults and the check of given values. Free of
the ``mcp`` SDK, so that the command line can show the defaults without importing it; the
limits are enforced by :mod:`memos_core.mcp_server.sessions`."""

from __future__ import annotations

import math
from typing import Final

from memos_core.errors import InvalidInputError

__all__ = ["DEFAULT_MAX_SESSIONS_PER_TOKEN", "DEFAULT_SESSION_IDLE_TIMEOUT",
           "check_session_limits"]

DEFAULT_MAX_SESSIONS_PER_TOKEN: Final = 64
"""Open sessions one token may hold; an MCP client needs one per connection."""

DEFAULT_SESSION_IDLE_TIMEOUT: Final = 600.0
"""Seconds a session may have no request in flight (and no open event stream) before it is
closed; a client whose session expired gets 404 and opens a new one."""


def check_session_limits(max_sessions_per_token: object, session_idle_timeout: object
                         ) -> tuple[int, float | None]:
    """The two limits if usable: a cap of at least 1 session, and a positive finite number
    of seconds (``None``: sessions never expire); else ``InvalidInputError``."""
    cap = max_sessions_per_token
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
        raise InvalidInputError(
            f"max_sessions_per_token must be an int of at least 1, got {cap!r}.")
    timeout = session_idle_timeout
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not math.isfinite(timeout) or timeout <= 0):
        raise InvalidInputError("session_idle_timeout must be a positive number of seconds "
                                f"(or None: never), got {timeout!r}.")
    return cap, None if timeout is None else float(timeout)
