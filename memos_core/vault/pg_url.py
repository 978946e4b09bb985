"""PostgreSQL URLs in messages: what to hide before one is shown.

libpq takes a password in three places, and every one of them must stay out of error
messages, ``stats`` and ``repr``: the ``user:password@`` of a URL, its ``password=`` and
``sslpassword=`` query parameters (``postgresql://memos@db/memos?password=...``, the key
percent-encoded or not), and the same keywords of a ``key=value`` connection string
(``host=db password=...``), which server mode refuses but must not echo while refusing it.
Pure string functions: no driver, no network.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

__all__ = ["hide_secrets", "redact_url"]

#: libpq's keywords whose values are secrets
SECRET_KEYS = frozenset({"password", "sslpassword"})
#: a secret keyword of a ``key=value`` string and its value (quoted, or up to a space)
_DSN_SECRET = re.compile(r"(\b(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)", re.IGNORECASE)
#: a ``key=value`` pair of a URL's query (up to ``&`` or the fragment)
_QUERY_PAIR = re.compile(r"([^&=#]*)=([^&#]*)")


def _split(url: str) -> tuple[str, int, int] | None:
    """``(rest, at, query)`` of a URL: ``rest`` after ``scheme://``; ``at`` the position in
    it of the ``@`` that ends the user information (-1: none); ``query`` where the query
    starts (after ``?``; -1: none). None if ``url`` has no ``://``.

    The user information ends at the last ``@`` before the first ``/``, as Python's
    ``urlsplit`` reads it (libpq stops at the first: an unencoded ``@`` in a password is
    refused by ``server_mode.check_url``); a password that holds an unencoded ``/`` puts
    that ``@`` after the ``/``, so then the last ``@`` before the query counts (hiding too
    much is safe, too little is not)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    query = rest.find("?")
    end = len(rest) if query < 0 else query
    slash = rest.find("/", 0, end)
    at = rest.rfind("@", 0, end if slash < 0 else slash)
    if at < 0:
        at = rest.rfind("@", 0, end)
    return rest, at, (-1 if query < 0 else query + 1)


def _secret_values(url: str) -> list[str]:
    """The passwords ``url`` holds, as written (percent-encoded or not)."""
    parts = _split(url)
    if parts is None:
        return [m.group(2).strip("'") for m in _DSN_SECRET.finditer(url)]
    rest, at, query = parts
    found = []
    if at >= 0 and ":" in rest[:at]:
        found.append(rest[:at].split(":", 1)[1])
    if query >= 0:
        found += [value for key, value in _QUERY_PAIR.findall(rest[query:])
                  if unquote(key).strip().lower() in SECRET_KEYS]
    return [value for value in found if value]


def redact_url(url: str) -> str:
    """``url`` with every password replaced by ``***`` (for messages and stats): the one of
    ``user:password@`` and the values of the ``password`` and ``sslpassword`` query
    parameters; in a ``key=value`` string (no ``://``), the values of those keywords.
    Everything else is kept as written. Never raises."""
    parts = _split(url)
    if parts is None:
        return _DSN_SECRET.sub(r"\1***", url)
    rest, at, query = parts
    head = url[: len(url) - len(rest)]
    if query >= 0:
        rest = rest[:query] + _QUERY_PAIR.sub(
            lambda m: m.group(1) + "=***" if unquote(m.group(1)).strip().lower() in SECRET_KEYS
            else m.group(0), rest[query:])
    if at >= 0 and ":" in rest[:at]:
        rest = rest[:at].split(":", 1)[0] + ":***" + rest[at:]
    return head + rest


def hide_secrets(text: str, url: str) -> str:
    """``text`` (a driver's message about ``url``) with the passwords of ``url`` replaced by
    ``***``, as written and percent-decoded: libpq quotes what it could not read (``invalid
    percent-encoded token: "..."``), a password included."""
    for secret in sorted(_secret_values(url), key=len, reverse=True):
        for form in {secret, unquote(secret)}:
            if form:
                text = text.replace(form, "***")
    return text
