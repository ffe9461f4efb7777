"""`python -m app ingest DIR` (what `make ingest` runs) on a folder of mixed files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.support.documents import GIF_BYTES, make_docx, make_encrypted_pdf, make_pdf, page_text
from tests.support.server import ROOT
from tests.support.services import libpq

pytestmark = pytest.mark.e2e


def ingest(database_url: str, folder: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "COLUMNS": "200", "LOG_JSON": "true"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "app",
            "ingest",
            str(folder),
            "--tenant",
            "cli-test",
            "--tags",
            "handbook,2026",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_ingest_prints_a_summary_and_a_second_run_adds_nothing(clean_database: str, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    (folder / "guides").mkdir(parents=True)
    (folder / "guides" / "ops.md").write_text(f"# Ops\n\n{page_text(1)}\n\n## Backups\n\n{page_text(2)}\n")
    (folder / "notes.txt").write_text(page_text(3))
    (folder / "manual.pdf").write_bytes(make_pdf([page_text(4), page_text(5), page_text(6)]))
    (folder / "setup.docx").write_bytes(make_docx([("Install", page_text(7))]))
    (folder / "animation.gif").write_bytes(GIF_BYTES)  # a type nothing reads (PNG: OCR)
    (folder / "locked.pdf").write_bytes(make_encrypted_pdf([page_text(8)]))
    (folder / "empty.txt").write_text("   \n")

    first = ingest(clean_database, folder)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout
    assert "Ingestion summary" in out
    assert "7 files" in out and "4 ingested, 0 skipped, 3 failed" in out
    assert "unsupported_document_type" in out and "encrypted_document" in out and "empty_document" in out
    assert "pages/s" in out and "chunks/s" in out

    second = ingest(clean_database, folder)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "0 ingested, 4 skipped, 3 failed" in second.stdout
    with psycopg.connect(libpq(clean_database)) as conn:
        documents, versions = conn.execute(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM document_versions)"
        ).fetchone() or (0, 0)
        tags = conn.execute("SELECT DISTINCT unnest(tags) FROM documents ORDER BY 1").fetchall()
    assert (documents, versions) == (4, 4)
    assert [tag for (tag,) in tags] == ["2026", "handbook"]
