"""Builds eval/sqlite/pages.jsonl, the golden set's corpus, from Debian's ``sqlite3-doc`` package.

The SQLite documentation is in the public domain (see eval/sqlite/LICENSE). Each selected HTML
document is cut at its level-1/2 headings into sections, and a section longer than
``MAX_WORDS`` is cut at paragraph boundaries, so every page reads like a page of a manual:
a few hundred words under one heading. Run once by a maintainer; the harness only reads the JSONL.

    python -m scripts.eval.build_sqlite_corpus [--deb path/to/sqlite3-doc.deb]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
from pathlib import Path

import lxml.html

OUT = Path(__file__).resolve().parents[2] / "eval" / "sqlite" / "pages.jsonl"
MAX_WORDS = 450
MIN_WORDS = 60
# User-facing manual pages: the SQL language, pragmas, extensions, operations. Left out: release
# notes, cross-reference indexes, the C API reference and the very long formal requirements.
DOCUMENTS = [
    "lang_select",
    "lang_insert",
    "lang_update",
    "lang_delete",
    "lang_upsert",
    "lang_returning",
    "lang_with",
    "lang_createtable",
    "lang_createindex",
    "lang_createview",
    "lang_createtrigger",
    "lang_altertable",
    "lang_droptable",
    "lang_transaction",
    "lang_savepoint",
    "lang_vacuum",
    "lang_analyze",
    "lang_attach",
    "lang_expr",
    "lang_corefunc",
    "lang_aggfunc",
    "lang_datefunc",
    "lang_mathfunc",
    "lang_conflict",
    "lang_explain",
    "lang_indexedby",
    "lang_naming",
    "lang_reindex",
    "lang_replace",
    "lang_comment",
    "datatype3",
    "stricttables",
    "withoutrowid",
    "rowidtable",
    "autoinc",
    "foreignkeys",
    "partialindex",
    "expridx",
    "gencol",
    "windowfunctions",
    "json1",
    "wal",
    "inmemorydb",
    "limits",
    "quirks",
    "isolation",
    "threadsafe",
    "mmap",
    "backup",
    "uri",
    "nulls",
    "floatingpoint",
    "csv",
    "dbstat",
    "sqlar",
    "loadext",
    "appfunc",
    "deterministic",
    "eqp",
    "recovery",
    "whentouse",
    "serverless",
    "zeroconf",
    "pragma",
]


# The syntax diagrams' show/hide toggles ("select-stmt: hide expr: show ...") are not prose.
_DIAGRAM_TOGGLES = re.compile(r"(?:\b[a-z][\w-]*: (?:hide|show)\s*)+")


def _text(element: lxml.html.HtmlElement) -> str:
    text = " ".join(element.text_content().split())
    return re.sub(r"\s+([.,;:)])", r"\1", text)


def _blocks(root: lxml.html.HtmlElement) -> list[tuple[str, str]]:
    """(kind, text) in document order: "h" for h1/h2 headings, "p" for other blocks."""
    body = root.find(".//body")
    blocks: list[tuple[str, str]] = []
    for element in body.iter("h1", "h2", "h3", "p", "li", "pre", "dt", "dd", "td", "blockquote"):
        if any(
            parent.tag in {"li", "p", "dd", "td", "blockquote", "pre"} for parent in element.iterancestors()
        ):
            continue
        text = _text(element)
        if not text:
            continue
        kind = "h" if element.tag in {"h1", "h2"} else "p"
        text = _DIAGRAM_TOGGLES.sub("", text).strip()
        if not text:
            continue
        blocks.append((kind, text))
    return blocks


def _heading(text: str) -> str:
    return re.sub(r"^[\d.]+\s*", "", text).strip()


def pages_of(name: str, root: lxml.html.HtmlElement) -> list[dict[str, str]]:
    title = " ".join((root.findtext(".//title") or name).split())
    sections: list[tuple[str, list[str]]] = [("", [])]
    for kind, text in _blocks(root):
        if kind == "h":
            sections.append((_heading(text), []))
        else:
            sections[-1][1].append(text)
    pages: list[dict[str, str]] = []
    for heading, paragraphs in sections:
        current: list[str] = []
        words = 0
        for paragraph in paragraphs:
            size = len(paragraph.split())
            if current and words + size > MAX_WORDS:
                pages.append({"heading": heading, "text": "\n\n".join(current)})
                current, words = [], 0
            current.append(paragraph)
            words += size
        if current:
            pages.append({"heading": heading, "text": "\n\n".join(current)})
    kept = [page for page in pages if len(page["text"].split()) >= MIN_WORDS]
    return [
        {
            "title": f"{title}: {page['heading']}" if page["heading"] and page["heading"] != title else title,
            "source": f"https://sqlite.org/{name}.html",
            "text": page["text"],
        }
        for page in kept
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deb", type=Path, help="a downloaded sqlite3-doc .deb (default: apt-get download)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        deb = args.deb
        if deb is None:
            subprocess.run(["apt-get", "download", "sqlite3-doc"], cwd=work, check=True)
            deb = next(Path(work).glob("sqlite3-doc_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), work], check=True)
        docs = Path(work) / "usr/share/doc/sqlite3"
        pages: list[dict[str, str]] = []
        for name in DOCUMENTS:
            pages.extend(pages_of(name, lxml.html.parse(str(docs / f"{name}.html")).getroot()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as out:
        for number, page in enumerate(pages, start=1):
            out.write(json.dumps({"id": f"p{number:03d}", **page}, ensure_ascii=False) + "\n")
    print(f"{len(pages)} pages, {sum(len(p['text'].split()) for p in pages)} words -> {OUT}")


if __name__ == "__main__":
    main()
