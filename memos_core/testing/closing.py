"""A call held inside the vault while its MemOS closes: what ``close()`` must wait for (the
adapters' tests of counted storage calls)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def close_during(mos: Any, monkeypatch: Any, vault_method: str,
                 call: Callable[[], object]) -> dict[str, object]:
    """Run ``call()`` in a thread, hold it inside ``mos``'s vault's ``vault_method`` (patched
    with pytest's ``monkeypatch``), close ``mos`` in another thread, and let the call go on a
    second later (a close that did not wait for it has closed the database by then); return
    ``{"result": ...}`` or ``{"error": ...}``."""
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
    if not entered.wait(30):
        raise AssertionError(f"the call never reached the vault's {vault_method}")
    closer = threading.Thread(target=mos.close)
    closer.start()
    closer.join(1.0)
    release.set()
    caller.join(30)
    closer.join(60)
    if not mos.closed or closer.is_alive():
        raise AssertionError("close() did not finish")
    return outcome
