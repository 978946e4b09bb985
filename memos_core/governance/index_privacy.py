"""What the index may hold of a memory's tags: keyed hashes, never the tags themselves.

Tags are user data ("diagnosis", a client's name). The index keeps a memory's filter
fields in files that a delete does not rewrite at once -- Qdrant's write-ahead log, its
payload storage and its payload index keep the bytes of a deleted point until segments are
rebuilt -- so anything written there outlives a forget. The index therefore stores each tag
as an HMAC-SHA256 under a random key kept in the vault (``meta['index_tag_key']``), and a
tag filter is hashed the same way. After a forget no tag byte is left in the index files;
what may linger there is a keyed hash, meaningless without the vault's key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

#: meta key of the per-store HMAC key (hex).
KEY_META = "index_tag_key"
#: meta key recording the index's payload format; a store whose index was built with another
#: (raw tags) is rebuilt from the vault when opened.
FORMAT_META = "index_payload_format"
FORMAT = "tags-hmac-v1"


def store_key(vault: Any) -> bytes:
    """The store's tag key, created (32 random bytes) on first use."""
    value = vault.get_meta(KEY_META)
    if value is None:
        value = secrets.token_hex(32)
        vault.set_meta(KEY_META, value)
    return bytes.fromhex(value)


def hide_tags(tags: Iterable[str], key: bytes) -> list[str]:
    """Each tag as the hex HMAC-SHA256 (first 128 bits) the index stores and filters on."""
    return [hmac.new(key, t.encode("utf-8"), hashlib.sha256).hexdigest()[:32] for t in tags]


def hide_payload(payload: dict[str, Any], key: bytes) -> dict[str, Any]:
    """``payload`` (an index payload or graph row) with its tags hidden."""
    return {**payload, "tags": hide_tags(payload.get("tags") or (), key)}
