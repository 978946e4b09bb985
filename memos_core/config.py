"""Configuration of a MemOS instance: small frozen pydantic models with named presets."""

from __future__ import annotations

import os
import re
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from memos_core.errors import InvalidInputError

#: "localhost:6333", "qdrant.internal:6334/": a server address without its scheme.
_HOST_PORT = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*:[0-9]{1,5}/?")

#: "ftp://x", "htp:/host": a URL scheme (two letters or more: "C:/data" is a Windows path).
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/")

#: Largest memory text accepted, in bytes of UTF-8.
MAX_TEXT_BYTES = 1_000_000


class RetrievalConfig(BaseModel):
    """How hybrid search gathers and fuses candidates."""

    # a misspelt field is an error; so is an infinite or NaN number (a weight of inf made
    # every score NaN, an rrf_k of inf every score 0)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    candidates: int = Field(default=50, ge=1, description="Candidates fetched per signal.")
    fusion: Literal["score", "rrf"] = Field(
        default="score",
        description="'score': weighted mean of min-max normalised scores; 'rrf': reciprocal "
        "rank fusion.",
    )
    rrf_k: float = Field(default=60.0, gt=0, description="Reciprocal rank fusion constant.")
    dense_weight: float = Field(default=0.4, ge=0, description="Weight of the dense signal.")
    sparse_weight: float = Field(default=0.6, ge=0, description="Weight of the BM25 signal.")
    graph_weight: float = Field(
        default=0.5, ge=0,
        description="A memory related to a top hit gains this times the hit's fused score.",
    )
    entity_weight: float = Field(
        default=0.1, ge=0,
        description="A memory naming an entity of the query gains this times the best fused "
        "score (divided by log2(1 + how many memories name it)).",
    )
    graph_seeds: int = Field(
        default=10, ge=0, description="Top fused hits whose graph neighbours are expanded."
    )
    neighbour_turns: int = Field(
        default=2, ge=0, description="Turns before/after a hit in the same session to expand."
    )
    graph_max_degree: int = Field(
        default=30, ge=0,
        description="Graph expansion follows an entity (shared with a top hit, or named by "
        "the query) only if at most this many memories of the principal's view name it. "
        "Entities named more often give each memory a small credit and cost the most to "
        "follow (docs/benchmarks.md, 'Graph expansion follows only entities named by at "
        "most 30 memories'); the graph's own hub limit (200) still applies.",
    )
    session_weight: float = Field(
        default=0.0, ge=0,
        description="Session-level retrieval: candidates of the best `session_count` "
        "sessions gain this times their session's relative score (0: off).",
    )
    session_count: int = Field(default=3, ge=1, description="Sessions boosted.")
    temporal_weight: float = Field(
        default=0.0, ge=0,
        description="Memories whose occurred_at falls in a time the query names ('in May "
        "2023', 'last week') get their score multiplied by 1 + this (0: off).",
    )
    prf_weight: float = Field(
        default=0.0, ge=0,
        description="Pseudo-relevance feedback: BM25 is searched again with the heaviest "
        "terms of the first `prf_docs` hits added at this weight (0: off).",
    )
    prf_docs: int = Field(default=3, ge=1, description="Hits used for feedback.")
    prf_terms: int = Field(default=8, ge=1, description="Feedback terms added to the query.")
    speaker_weight: float = Field(
        default=1.0, ge=0,
        description="When the query names one speaker of the candidate turns ('Name: ...'), "
        "that speaker's turns get their score multiplied by 1 + this (0: off). LoCoMo dev: "
        "recall@10 0.755 -> 0.776 (docs/benchmarks.md).",
    )
    question_weight: float = Field(
        default=0.25, ge=0, le=1,
        description="A memory that is only a question (\"what bike do I have?\") has its "
        "score multiplied by this, so statements rank above past questions (1: off).",
    )
    rerank_depth: int = Field(
        default=30, ge=1,
        description="Candidates whose texts are read for the second stage (question "
        "demotion, optional reranker); at least k.",
    )
    reranker_weight: float = Field(
        default=0.5, ge=0, le=1,
        description="Share of an optional reranker's (normalised) score in the final score.",
    )
    query_cache: int = Field(
        default=256, ge=0, description="Query vectors kept in an LRU cache (0: no cache)."
    )
    session_stage_weight: float = Field(
        default=0.0, ge=0,
        description="Two-stage session retrieval: dense + BM25 searched again inside the "
        "best `session_count` sessions, fused with the turn ranking at this weight (0: off).",
    )
    session_stage_hits: int = Field(default=10, ge=1, description="Hits per session searched.")
    hop_weight: float = Field(
        default=0.3, ge=0,
        description="Multi-hop second search: BM25 for the query plus the specific entities "
        "of the first `hop_docs` hits, fused in at this weight (0: off). LoCoMo dev: "
        "multi-hop recall@10 +1.3 to 1.6 points (docs/benchmarks.md).",
    )
    hop_source: Literal["graph", "index"] = Field(
        default="graph",
        description="'graph': the hop adds the entities' BM25 weight to the memories of the "
        "principal's graph view that name them (no index search: on a server, no round "
        "trip); 'index': a BM25 index search for the query plus the entities (the earlier "
        "form). LoCoMo dev: the same recall@10, multi-hop recall@10 0.4 point lower "
        "(docs/benchmarks.md).")
    hop_docs: int = Field(default=3, ge=1, description="First hits whose entities are used.")
    hop_entities: int = Field(default=4, ge=1, description="Entities added to the query.")
    hop_max_degree: int = Field(
        default=20, ge=1, description="Entities named by more memories are not specific enough.")
    when_weight: float = Field(
        default=1.0, ge=0,
        description="Answer-type cue: for a query asking when, turns with a time expression "
        "of their own ('last week', 'in June') get their score multiplied by 1 + this "
        "(0: off). LoCoMo dev: temporal recall@10 +0.6 to 1.4 points (docs/benchmarks.md).",
    )
    dense_common_share: float = Field(
        default=0.1, ge=0, le=1,
        description="The dense query leaves out the names that at least this share of the "
        "visible memories name (a conversation's speakers); BM25 and the second stage still "
        "see them (0: off). LoCoMo dev: recall@10 +1.3 points, multi-hop +2.6 "
        "(docs/benchmarks.md, issue 16 fourth pass).",
    )
    dense_dated_names: bool = Field(
        default=True,
        description="A query naming a calendar date ('in June', 'on 24 October, 2023', 'in "
        "2022') keeps its common names in the dense query (`dense_common_share` does not "
        "apply to it). LoCoMo dev: temporal recall@5 0.796 -> 0.815, recall@10 +0.4 point "
        "(docs/benchmarks.md, issue 16 fifth pass).",
    )
    list_speaker_weight: float = Field(
        default=0.5, ge=0,
        description="For a question asking for several things ('What books has Ana read?', "
        "'How many ...'), the dense hits that are turns of the one speaker it names are fused "
        "once more as a signal of this weight (0: off; memos_core.retrieval.listing). LoCoMo "
        "dev: multi-hop recall@10 +1.6 points, all@10 +2.3 (docs/benchmarks.md, issue 16 "
        "fifth pass).",
    )
    own_voice_weight: float = Field(
        default=0.2, ge=0,
        description="When the query names one speaker, that speaker's first-person turns get "
        "their score multiplied by 1 + this in the second stage (0: off). LoCoMo dev: "
        "recall@10 +0.5 points, multi-hop +1.5 (docs/benchmarks.md, issue 16 fourth pass).",
    )
    mmr_lambda: float = Field(
        default=1.0, ge=0, le=1,
        description="Maximal marginal relevance over the second stage's candidates: "
        "relevance weight against similarity to those ranked above (1: off).",
    )
    mmr_similarity: Literal["terms", "session"] = Field(
        default="session",
        description="Similarity for `mmr_lambda`: 'terms' (BM25 term vectors of the bodies) "
        "or 'session' (same session).",
    )
    decompose: bool = Field(
        default=False,
        description="Conjunctive queries ('X and Y both ...', '... bought or made ...') are "
        "also searched as rule-based sub-queries, fused round-robin.",
    )
    session_cap: int = Field(
        default=0, ge=0,
        description="At most this many turns of one session keep their rank in the second "
        "stage; the rest follow the other candidates (0: off).",
    )


class MemOSConfig(BaseModel):
    """Everything a MemOS instance needs; the defaults run embedded and offline."""

    # a misspelt field is an error; so is an infinite or NaN number (a weight of inf made
    # every score NaN, an rrf_k of inf every score 0)
    # a validation error quotes no input: index_url may hold a password (its own messages
    # name what is wrong)
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False,
                              hide_input_in_errors=True)

    index: Literal["edge", "qdrant", "pgvector"] = Field(
        default="edge",
        description="'edge': Qdrant's engine in-process (default). 'qdrant': qdrant-client, "
        "against `qdrant_url` or, without one, its local mode (slow filtered search). "
        "'pgvector': PostgreSQL with pgvector at `index_url` (server mode).",
    )
    index_url: str | None = Field(
        default=None,
        description="PostgreSQL URL (postgresql://user:pass@host:port/db) of the index "
        "when index='pgvector'; its tables are named after `qdrant_collection`.",
    )
    qdrant_url: str | None = Field(default=None, description="Qdrant server or cluster URL.")

    @field_validator("qdrant_url")
    @classmethod
    def _server_url(cls, value: str | None) -> str | None:
        # qdrant-client takes anything but an http(s):// URL as a local path: a typo
        # ("localhost:6333", "htp://host:6333", "ftp://x") would silently make a local index
        # named like the server in the working directory, and "" fails deep in the client (a
        # path or ":memory:" is meant as one, and stays allowed)
        if value is None:
            return value
        if not value.strip():
            raise ValueError("qdrant_url is empty: give a server URL (http://host:6333), a "
                             "directory or ':memory:' for qdrant-client's local mode, or leave "
                             "it None")
        if value != value.strip():
            raise ValueError(f"qdrant_url {value[:80]!r} has spaces around it; remove them")
        scheme = _SCHEME.match(value)
        if scheme is not None and scheme.group(1).lower() not in ("http", "https"):
            raise ValueError(f"qdrant_url {value[:80]!r} has the scheme {scheme.group(1)!r}; a "
                             "Qdrant server URL starts with http:// or https://")
        if scheme is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"qdrant_url {value[:80]!r}: write the scheme in lower case "
                             "(http:// or https://)")
        if _HOST_PORT.fullmatch(value):
            raise ValueError(f"qdrant_url {value[:80]!r} looks like host:port; a server URL "
                             "starts with http:// or https://")
        return value
    qdrant_collection: str = Field(
        default="memos", min_length=1,
        description="Collection on the Qdrant server. An index mirrors one vault: give each "
        "data directory that shares a server its own collection, or they erase each other's "
        "points when they reconcile.",
    )
    embedder: str = Field(
        default="minilm",
        description="'minilm' (bundled all-MiniLM-L6-v2) or a sentence-transformers name/path. "
        "Recorded per index when its vectors are made: an embedded store opened with another "
        "model embeds every memory again; a server-mode index shared with other processes "
        "refuses it.",
    )

    @field_validator("embedder")
    @classmethod
    def _model_named(cls, value: str) -> str:
        if not value.strip():  # an empty name would reach the loader as the working directory
            raise ValueError("embedder is empty: give 'minilm' (the bundled default) or a "
                             "sentence-transformers model name or path")
        return value
    embedder_backend: Literal["auto", "onnx", "onnx+bf16", "bf16", "onnx-int8", "torch"] = Field(
        default="auto",
        description="'auto': ONNX Runtime when onnxruntime is importable (same vectors, "
        "faster; exported once from the model's weights and cached), with calls of 4 or more "
        "texts in torch with bf16 matrix products on a CPU with bf16 hardware ('onnx+bf16'; "
        "same vectors up to rounding, cosine >= 0.9999; only once torch is imported by something "
        "else, such as the local chat model), else torch; "
        "$MEMOS_EMBEDDER_BACKEND overrides 'auto'. 'onnx', 'onnx+bf16', 'bf16' or 'torch' "
        "force one; "
        "'onnx-int8' (opt-in) quantises the weight matrices per channel: about twice as "
        "fast, vectors close (mean cosine 0.99), not identical.",
    )
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    heat_half_life_s: float = Field(
        default=7 * 24 * 3600.0, gt=0, description="Half-life of a memory's heat score."
    )
    show_progress: bool = Field(default=True, description="Progress bars on bulk work.")
    allow_sensitive: tuple[str, ...] = Field(
        default=(),
        description="Sensitivity tags whose memories search returns unredacted by default "
        "(so chat and the adapters put their text into prompts); '*' allows every tag. "
        "Default: none -- a memory tagged e.g. 'pii' reaches prompts as '[redacted: pii]'.",
    )
    admin_users: tuple[str, ...] = Field(
        default=(),
        description="Principals allowed the store-wide views: stats() over every user and "
        "verify_audit(), which reads every user's audit records. Everyone else gets their "
        "own counts from stats() and AccessDeniedError from verify_audit(). The command "
        "line, which reads the data directory's files itself, runs as an admin.",
    )
    optimize_after: int = Field(
        default=20_000, ge=1,
        description="Bulk adds and reindexing optimise the index once this many points were "
        "written since the last optimisation (below it brute force search is fast enough).",
    )
    graph_max_memories: int = Field(
        default=200_000, ge=1,
        description="The graph is held as per-user views, loaded from the vault when a search "
        "first needs one and evicted least recently used once the loaded views hold more "
        "memories than this, each view counted 3 more for its own structures (about 180 MB: "
        "100,000 memories in 100 views took 89.4 MB, "
        "benchmarks/results/graph_memory_views_2026-12-06.txt; the views alone measure at most "
        "1.2 KB per unit, 239 MB at this default, benchmarks/results/"
        "graph_view_cost_2026-12-07.txt; docs/benchmarks.md, 'Per-user graph views'). A store "
        "whose views fit (its memories plus 3 per user searching) never evicts; the view in "
        "use is never evicted.",
    )

    cache_dir: Path | None = Field(
        default=None,
        description="Server mode (a postgresql:// URL instead of a data directory): the local "
        "directory for what stays per process -- KV-cache files, LoRA adapters, a per-process "
        "'edge' index. One process per cache directory (it is locked). None: a temporary "
        "directory, removed at close, or, if the process is killed, by the next server-mode "
        "open or forget on this host (KV caches and adapters are then rebuilt by each "
        "process). Ignored in the embedded mode, where they live in the data directory.",
    )
    pool_size: int = Field(
        default=4, ge=1,
        description="Server mode: most connections this process's vault pool opens, and "
        "the pgvector index's pool (a search holds an index connection while it embeds its "
        "query). Budget processes x (2 x pool_size + 1) under the server's max_connections "
        "(docs/scale_out.md).",
    )
    cube_cache: int = Field(
        default=4096, ge=0,
        description="Server mode: how many decoded memories this process's vault keeps (0: "
        "none). Reads still read each memory's current row, rights and state included; the "
        "server sends a document again only if its row changed since (docs/scale_out.md).",
    )
    feed_retention_s: float = Field(
        default=7 * 24 * 3600.0, ge=0,
        description="Server mode: change-feed rows older than this are deleted when a "
        "process opens. A process away longer (its cursor before the oldest row) rebuilds "
        "its derived state from the vault on its next call.",
    )
    index_repair_after_s: float = Field(
        default=10.0, ge=0,
        description="Server mode with a shared index: a memory another process committed is "
        "checked in the index this many seconds later and indexed again if its writer died "
        "between the vault commit and the index write.",
    )
    listen: bool = Field(
        default=True,
        description="Server mode: a LISTEN connection wakes this process when another "
        "commits, so it catches up in the background (each call still checks the change "
        "feed's head first; False saves one connection per process).",
    )

    @model_validator(mode="after")
    def _urls_match_the_index(self) -> MemOSConfig:
        # a URL the chosen index does not read was dropped silently (index_url with 'edge')
        # or refused only at open (qdrant_url with 'edge'): both are refused here, naming
        # both fields. index_url with the default index stays allowed: server mode (a
        # postgresql:// URL for the data directory) makes that index 'pgvector' and uses it;
        # an embedded store refuses it when it opens (MemOS).
        if self.qdrant_url is not None and self.index != "qdrant":
            raise ValueError(
                f"qdrant_url is set but index is {self.index!r}: only index='qdrant' uses "
                "qdrant_url. Set index='qdrant' (or use MemOSConfig.preset('server', "
                "qdrant_url=...)), or drop qdrant_url.")
        if (self.index_url is not None and self.index != "pgvector"
                and "index" in self.model_fields_set):
            raise ValueError(
                f"index_url is set but index is {self.index!r}: only index='pgvector' uses "
                "index_url. Set index='pgvector', or drop index_url.")
        return self

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The fields ``repr`` shows, ``index_url`` with its password hidden (a config is
        printed in logs and tracebacks)."""
        from memos_core.vault.pg_url import redact_url  # (pure string functions)

        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "index_url" and isinstance(value, str)
                         else value)

    @classmethod
    def preset(cls, name: Literal["default", "server", "test"], **overrides: object) -> "MemOSConfig":
        """Named presets: 'default' (embedded), 'server' (Qdrant by URL), 'test' (quiet)."""
        presets: dict[str, dict[str, object]] = {
            "default": {},
            "server": {"index": "qdrant"},
            "test": {"show_progress": False},
        }
        if name not in presets:
            raise InvalidInputError(f"unknown preset {name!r}: choose one of {sorted(presets)}")
        return cls.model_validate({**presets[name], **overrides})


def user_path(value: str | os.PathLike[str]) -> Path:
    """A path a user typed, with a leading ``~`` expanded, as the cache paths are: a ``~``
    that no shell expanded (``--data-dir=~/mem``, ``ENV MEMOS_DATA_DIR=~/mem`` in a
    Dockerfile, a quoted value) would otherwise name a directory called ``~`` in the
    working directory.

    Raises:
        InvalidInputError: it starts with ``~name`` and this machine has no user ``name``.
    """
    try:
        return Path(value).expanduser()
    except RuntimeError:  # ~name of no user here: a literal directory would be the trap above
        raise InvalidInputError(f"{value}: this machine has no home directory for "
                                f"{Path(value).parts[0]!r}; give the full path.") from None


def path_argument(value: str) -> Path:
    """:func:`user_path` as an ``argparse`` type: its error becomes the option's message."""
    import argparse

    try:
        return user_path(value)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def default_data_dir() -> Path:
    """``$MEMOS_DATA_DIR`` (``~`` expanded) or ``~/.memos``.

    Raises:
        InvalidInputError: ``$MEMOS_DATA_DIR`` is set but empty (``Path("")`` would be the
            working directory).
    """
    value = os.environ.get("MEMOS_DATA_DIR")
    if value is not None and not value.strip():
        raise InvalidInputError("MEMOS_DATA_DIR is set but empty: unset it (the default is "
                                "~/.memos) or name a directory.")
    return user_path(value) if value is not None else Path.home() / ".memos"
