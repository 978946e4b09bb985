"""Fixtures of the server-mode tests (the PostgreSQL server itself: tests/conftest.py)."""

from __future__ import annotations

import pytest

from memos_core import MemOS, MemOSConfig


@pytest.fixture
def open_mos(request, pg_url):
    """Factory of ``MemOS(pg_url)`` instances on the test's database; closes them all,
    newest first. Config fields: ``show_progress=False``, then the test module's
    ``MOS_DEFAULTS`` (a dict, if it has one), then the call's keywords."""
    defaults = {"show_progress": False, **getattr(request.module, "MOS_DEFAULTS", {})}
    opened: list[MemOS] = []

    def make(**kw) -> MemOS:
        mos = MemOS(pg_url, config=MemOSConfig(**{**defaults, **kw}))
        opened.append(mos)
        return mos

    yield make
    for mos in reversed(opened):
        mos.close()
