"""What ranking does for a user: rare words count more than repeated common ones (BM25), a
passage is found by its document's title even when its own text never says it, one long document
cannot crowd the others out of the sources, and no part of a chunk is cut off the model's window."""

from __future__ import annotations

import httpx
import pytest

from app.db.models import Chunk
from app.documents.chunking import embedding_input
from app.rag.embeddings import LocalEmbedder
from app.rag.tokens import WordPieceTokenCounter
from app.resources import Resources
from tests.support.callers import Caller
from tests.support.documents import chunk_rows
from tests.support.library import Library, ask

pytestmark = [pytest.mark.integration, pytest.mark.pgvector]


@pytest.fixture
def app_embedder(embedder: LocalEmbedder) -> LocalEmbedder:
    return embedder


async def test_a_rare_word_outranks_a_common_word_repeated(
    client: httpx.AsyncClient, library: Library, editor: Caller
) -> None:
    for n in range(8):
        await library.add(
            f"The database stores rows. Every database has tables; a database file holds database pages {n}.",
            filename=f"db{n}.txt",
        )
    rare = await library.add("Compaction rewrites the file to reclaim free pages.", filename="compaction.txt")
    body = (await ask(client, editor, "database compaction", mode="text", top_k=3)).json()
    assert body["sources"][0]["document_id"] == rare


async def test_a_passage_is_found_by_its_document_title(
    client: httpx.AsyncClient, library: Library, editor: Caller
) -> None:
    await library.add("Rows are kept in pages of four kilobytes.", filename="a.txt", title="Storage layout")
    titled = await library.add(
        "Run it weekly; it rewrites everything and returns freed space to the disk.",
        filename="b.txt",
        title="Vacuum command",
    )
    body = (await ask(client, editor, "how often should I vacuum", mode="text", top_k=1)).json()
    assert [source["document_id"] for source in body["sources"]] == [titled]
    assert body["sources"][0]["snippet"].startswith("Run it weekly")  # the title is not in the text


async def test_one_long_document_does_not_crowd_out_the_others(
    client: httpx.AsyncClient, library: Library, editor: Caller
) -> None:
    long_page = " ".join(
        f"Checkpoint step {n}: the write-ahead log is copied back into the database file." for n in range(60)
    )
    crowding = await library.add(long_page, filename="wal.txt", title="Write-ahead log checkpoints")
    other = await library.add(
        "A checkpoint of the write-ahead log can be started by hand with a pragma.",
        filename="pragma.txt",
        title="Pragmas",
    )
    body = (await ask(client, editor, "How is the write-ahead log checkpointed?", top_k=3)).json()
    documents = [source["document_id"] for source in body["sources"]]
    assert len(documents) == 3 and {crowding, other} <= set(documents)
    assert documents.index(other) < 2  # each document's best passage comes before any repeat


async def test_every_chunk_fits_the_embedding_models_window(library: Library, resources: Resources) -> None:
    # Identifiers split into many WordPiece tokens: 200 words of them are far more than 256 tokens.
    dense = " ".join(f"sqlite3_stmt_{n}_xfer_vtab_cfg" for n in range(400)) + "."
    document_id = await library.add(dense, filename="api.txt", title="C interface identifiers")
    rows: list[Chunk] = await chunk_rows(resources, document_id)
    counter = WordPieceTokenCounter()
    assert len(rows) > 5
    assert all(counter.count(embedding_input(row.context, row.text)) <= 254 for row in rows)
    assert "sqlite3_stmt_399_xfer_vtab_cfg" in rows[-1].text  # nothing dropped
