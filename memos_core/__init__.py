"""memos-core: a memory operating system for LLM agents.

Start with :class:`MemOS`::

    from memos_core import MemOS

    with MemOS("./memdata") as mos:
        cube = mos.add("Alice is vegetarian.", user_id="alice")
        hits = mos.search("what does alice eat?", user_id="alice")

Importing this package loads no model and no agent framework; torch and transformers are
imported only when a model is first used.
"""

from memos_core.config import MemOSConfig, RetrievalConfig
from memos_core.cube import (
    Governance,
    MemCube,
    MemoryType,
    Namespace,
    Origin,
    Provenance,
    State,
    Tier,
    Usage,
)
from memos_core.errors import (
    AccessDeniedError,
    BundleError,
    ConflictError,
    CorruptDataError,
    DataDirLockedError,
    InvalidInputError,
    MemoryDeletedError,
    MemoryNotFoundError,
    MemOSError,
    NamespaceChangedError,
    PurgePendingError,
    ServerUnavailableError,
    VersionNotFoundError,
)
from memos_core.memos import MemOS, resolve_memos
from memos_core.results import ForgetReceipt, SearchHit

__version__ = "0.1.0"

__all__ = [
    "AccessDeniedError",
    "BundleError",
    "ConflictError",
    "CorruptDataError",
    "DataDirLockedError",
    "ForgetReceipt",
    "Governance",
    "InvalidInputError",
    "MemCube",
    "MemOS",
    "MemOSConfig",
    "MemOSError",
    "MemoryDeletedError",
    "MemoryNotFoundError",
    "MemoryType",
    "Namespace",
    "NamespaceChangedError",
    "Origin",
    "Provenance",
    "PurgePendingError",
    "RetrievalConfig",
    "SearchHit",
    "ServerUnavailableError",
    "State",
    "Tier",
    "Usage",
    "VersionNotFoundError",
    "__version__",
    "resolve_memos",
]
