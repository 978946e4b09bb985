"""A call held inside the vault while the MemOS closes: what close() must wait for."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from memos_core import MemOS


def close_during(mos: MemOS, monkeypatch: pytest.MonkeyPatch, vault_method: str,
                 call: Callable[[], object]) -> dict[str, object]:
    """Run ``call()`` in a thread, hold it inside the vault's ``vault_method``, close ``mos``
    in another thread, and let the call go on a second later (a close that did not wait for
    it has closed the database by then); ``{"result": ...}`` or ``{"error": ...}``."""
    vault = mos.store.vault
    original = getattr(vault, vault_method)
    entered, release = threading.Event(), threading.Event()

    def held(*args: object, **kwargs: object) -> object:
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(vault, vault_method, held)
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            outcome["error"] = exc

    caller = threading.Thread(target=run)
    caller.start()
    assert entered.wait(30)
    closer = threading.Thread(target=mos.close)
    closer.start()
    closer.join(1.0)
    release.set()
    caller.join(30)
    closer.join(60)
    assert mos.closed and not closer.is_alive()
    return outcome
