"""The MCP server's ``--http`` address: a host that is an IP address or a host name, and
how a URL spells it. Shared by the command line and the server (no import cycle)."""

from __future__ import annotations

import ipaddress
import re

from memos_core.errors import InvalidInputError

__all__ = ["check_host", "parse_http", "url_host"]

_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")


def check_host(host: object, name: str = "host") -> str:
    """``host`` if it is an IP address or a host name (ASCII labels of letters, digits, ``-``
    and ``_``, at most 253 characters, the last one not all digits: that is meant as an IPv4
    address); else ``InvalidInputError`` (``name`` says which argument, for the message)."""
    if not isinstance(host, str):
        raise InvalidInputError(f"{name} must be a str, got {type(host).__name__}.")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            raise InvalidInputError(f"{name} {host!r}: IPv6 zone ids (%...) are not supported; "
                                    "give the address without one.")
        return host
    labels = (host[:-1] if host.endswith(".") else host).split(".")
    if (len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels)
            or labels[-1].isdigit()):
        shown = host if len(host) <= 80 else host[:80] + "..."
        raise InvalidInputError(
            f"{name} {shown!r} is neither an IP address (e.g. 127.0.0.1 or [::1]) nor a host "
            "name (letters, digits, '-' and '.', e.g. localhost).")
    return host


def parse_http(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1); ``[::1]:PORT`` for IPv6. The
    host must be an IP address or a host name (:func:`check_host`), the port 0..65535."""
    host, _, port = value.rpartition(":")
    if host.startswith("[") or host.endswith("]"):
        if not (host.startswith("[") and host.endswith("]") and ":" in host):
            raise InvalidInputError(f"--http needs HOST:PORT or [IPv6]:PORT, got {value!r}.")
        host = host[1:-1]
    host = host or "127.0.0.1"
    if not re.fullmatch(r"[0-9]{1,5}", port):
        raise InvalidInputError(f"--http needs HOST:PORT with a port 0..65535, got {value!r}.")
    number = int(port)
    if not 0 <= number <= 65535:
        raise InvalidInputError(f"--http port must be 0..65535, got {number}.")
    return check_host(host, "--http host"), number


def url_host(host: str) -> str:
    """``host`` as a URL spells it (an IPv6 address in brackets)."""
    return f"[{host}]" if ":" in host else host
