"""The list-question speaker signal (``list_speaker_weight``) in server mode: the dense hits'
texts come from the PostgreSQL vault (real server, ``pg_url``), and a memory forgotten in the
vault but not yet in the index gets no signal and is not returned."""

from __future__ import annotations

from memos_core.config import RetrievalConfig
from memos_core.vault import Actor

MOS_DEFAULTS = {"listen": False}

TURNS = [("s1", "Ben", "Ana, do you like books? Ana, books are the best, Ana!"),
         ("s1", "Ana", "I just finished reading Dune, a novel about a desert planet."),
         ("s2", "Ben", "Ana, my book club read three books this month, Ana."),
         ("s2", "Ana", "My kids and I went swimming in the lake."),
         ("s3", "Ana", "Last night I started a novel by Ursula Le Guin, The Dispossessed.")]


def test_list_question_reads_speakers_from_the_server_vault(open_mos):
    mos = open_mos(retrieval=RetrievalConfig(list_speaker_weight=1.0))
    cubes = mos.add_many([{"text": f"{who}: {text}", "session_id": sid}
                          for sid, who, text in TURNS], user_id="u")
    query = "What books has Ana read?"
    hits = mos.search(query, user_id="u", k=5, record_usage=False)
    lifted = [h for h in hits if "speaker_dense" in h.signals]
    assert lifted and all(h.text.startswith("Ana:") for h in lifted)
    assert any("Dune" in h.text for h in lifted)
    dune = next(c for c in cubes if "Dune" in c.text)
    mos.vault.tombstone(dune.id, Actor("u"))  # the vault only: the index still lists it
    assert dune.id in mos.index.versions()
    again = mos.search(query, user_id="u", k=5, record_usage=False)
    assert dune.id not in [h.id for h in again]
    assert any("speaker_dense" in h.signals and "Dispossessed" in h.text for h in again)
