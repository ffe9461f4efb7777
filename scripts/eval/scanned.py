"""`make eval-ocr`: OCR on a scanned copy of the golden set, measured.

    python -m scripts.eval.scanned [--pages 51] [--modes vector,text,hybrid] [--cache F] [--shard i/n]

Renders golden-set pages (eval/sqlite) as scans with Pillow: A4 at 150, 200 or 300 dpi in turn,
rotated by up to ±1.5°, 2-5 % of pixels noise; every other page is an image-only PDF, the others
PNG. Each is read by the service's own path (``parse_document`` then ``recognise_pages``: the OCR
child process, one per document, as the worker runs it) and reports:

- the character error rate of the OCR text against the page's text (edit distance over the
  original's length, whitespace collapsed on both sides), overall and per resolution;
- OCR throughput: pages per second of one worker (wall clock per document, child start-up
  included);
- retrieval hit@5 / MRR (``make eval``'s harness) on the OCR'd pages beside the same pages as
  text, with the golden questions whose relevant pages are among them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.documents.parsing import ParseLimits, parse_document, recognise_pages
from app.rag.embeddings import create_local_embedder
from app.rag.query import RetrievalMode
from app.settings import Settings
from scripts.eval.golden import GoldenSet, Page, Question, load
from scripts.eval.harness import Configuration, Result, costs, evaluate, table
from tests.support.scans import ScanStyle, image_bytes, render_page, scanned_pdf
from tests.support.services import start_postgres, start_redis

DPIS = (150, 200, 300)
MIN_CHARS, MAX_CHARS = 200, 3000  # pages that fit one A4 page at 11 pt


@dataclass(frozen=True)
class Scan:
    page: Page
    dpi: int
    kind: str  # "pdf" or "png"
    ocr_text: str
    seconds: float

    @property
    def errors(self) -> int:
        return levenshtein(_collapse(self.page.text), _collapse(self.ocr_text))

    @property
    def errors_without_spaces(self) -> int:
        """Errors other than missing or extra spaces (the recogniser drops narrow word gaps)."""
        return levenshtein(_unspaced(self.page.text), _unspaced(self.ocr_text))


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _unspaced(text: str) -> str:
    return re.sub(r"\s+", "", text)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions), Myers/Hyyrö bit-parallel: one pass
    over ``b`` with ``len(a)``-bit integers."""
    if not a or not b:
        return len(a) + len(b)
    masks: dict[str, int] = defaultdict(int)
    for index, char in enumerate(a):
        masks[char] |= 1 << index
    full = (1 << len(a)) - 1
    top = 1 << (len(a) - 1)
    positive, negative, distance = full, 0, len(a)
    for char in b:
        equal = masks.get(char, 0)
        vertical = equal | negative
        horizontal = (((equal & positive) + positive) ^ positive) | equal
        up = negative | (~(horizontal | positive) & full)
        down = positive & horizontal
        if up & top:
            distance += 1
        elif down & top:
            distance -= 1
        up = ((up << 1) | 1) & full
        down = (down << 1) & full
        positive = down | (~(vertical | up) & full)
        negative = up & vertical
    return distance


def choose(golden: GoldenSet, count: int) -> tuple[list[Page], list[Question]]:
    """Pages that fit one A4 page, those the questions point at first; the questions whose
    relevant pages are all among them."""
    fits = {page.id: page for page in golden.pages if MIN_CHARS <= len(page.text) <= MAX_CHARS}
    chosen: dict[str, Page] = {}
    for question in golden.questions:
        if all(pid in fits for pid in question.relevant) and len(chosen) + len(question.relevant) <= count:
            chosen.update((pid, fits[pid]) for pid in sorted(question.relevant))  # same order every run
    for page in fits.values():
        if len(chosen) >= count:
            break
        chosen.setdefault(page.id, page)
    questions = [q for q in golden.questions if q.relevant <= chosen.keys()]
    return list(chosen.values()), questions


def scan(page: Page, number: int, limits: ParseLimits) -> Scan:
    rng = random.Random(number)
    dpi = DPIS[number % len(DPIS)]
    style = ScanStyle(dpi=dpi, rotation=rng.uniform(-1.5, 1.5), noise=rng.uniform(0.02, 0.05), seed=number)
    image = render_page(page.text, style)
    kind = "pdf" if number % 2 else "png"
    data = scanned_pdf([image], dpi) if kind == "pdf" else image_bytes(image, "PNG", dpi=(dpi, dpi))
    started = time.perf_counter()
    parsed = recognise_pages(data, parse_document(data, limits=limits), limits)
    seconds = time.perf_counter() - started
    return Scan(page, dpi, kind, "\n".join(p.text for p in parsed.pages), seconds)


def cer_table(scans: list[Scan]) -> str:
    lines = [
        "| scans | pages | CER | CER without spaces | median page CER | OCR s/page (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    groups: dict[str, list[Scan]] = {"all": scans}
    for dpi in DPIS:
        groups[f"{dpi} dpi"] = [s for s in scans if s.dpi == dpi]
    for kind in ("pdf", "png"):
        groups["image-only PDF" if kind == "pdf" else "PNG"] = [s for s in scans if s.kind == kind]
    for name, group in groups.items():
        if not group:
            continue
        total = sum(len(_collapse(s.page.text)) for s in group)
        rate = sum(s.errors for s in group) / total
        unspaced_total = sum(len(_unspaced(s.page.text)) for s in group)
        unspaced = sum(s.errors_without_spaces for s in group) / unspaced_total
        median = statistics.median(s.errors / len(_collapse(s.page.text)) for s in group)
        seconds = statistics.median(s.seconds for s in group)
        lines.append(
            f"| {name} | {len(group)} | {rate:.1%} | {unspaced:.1%} | {median:.1%} | {seconds:.1f} |"
        )
    return "\n".join(lines)


def _progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _retrieval(text_set: GoldenSet, ocr_set: GoldenSet, modes: list[RetrievalMode]) -> list[Result]:
    with tempfile.TemporaryDirectory(prefix="ragchat-eval-ocr-") as work:
        postgres = start_postgres()
        redis = start_redis(Path(work) / "redis")
        try:
            common: dict[str, Any] = {
                "redis_url": redis.url,
                "embedding_warm_up": False,
                "log_level": "ERROR",
                "data_dir": Path(work) / "data",
                "_env_file": None,
            }
            embedder = create_local_embedder(Settings(**common, database_url=postgres.base_url))
            results = []
            for name, golden in (("text", text_set), ("ocr", ocr_set)):
                database = postgres.create_database(f"ragchat_eval_{secrets.token_hex(4)}_{os.getpid()}")
                settings = Settings(
                    **common, database_url=database, redis_key_prefix=f"eval:{secrets.token_hex(4)}:"
                )
                results.append(
                    await evaluate(
                        settings,
                        golden,
                        Configuration(name),
                        modes=modes,
                        embedder=embedder,
                        progress=_progress,
                    )
                )
            await embedder.aclose()
        finally:
            postgres.drop_databases()
            postgres.stop()
            redis.stop()
    return results


def _cached(path: Path | None, pages: dict[str, Page]) -> dict[str, Scan]:
    if path is None or not path.exists():
        return {}
    scans = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["id"] in pages:
            page = pages[row["id"]]
            scans[page.id] = Scan(page, row["dpi"], row["kind"], row["ocr_text"], row["seconds"])
    return scans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="sqlite")
    parser.add_argument("--pages", type=int, default=51)
    parser.add_argument("--modes", default="vector,text,hybrid")
    parser.add_argument("--no-retrieval", dest="retrieval", action="store_false")
    parser.add_argument(
        "--cache", type=Path, help="JSON lines of recognised pages: appended to; pages in it are not redone"
    )
    parser.add_argument("--shard", default="1/1", help="i/n: every n-th page from the i-th (parallel runs)")
    args = parser.parse_args(argv)
    golden = load(args.corpus)
    pages, questions = choose(golden, args.pages)
    _progress(f"{len(pages)} pages scanned and recognised, {len(questions)} questions")
    # the page time limit raised: a busy shared machine must not cut the measurement short
    settings = Settings(_env_file=None, ocr_page_timeout_s=600)  # type: ignore[call-arg]
    limits = ParseLimits.from_settings(settings)
    done = _cached(args.cache, {page.id: page for page in pages})
    shard, shards = (int(part) for part in args.shard.split("/"))
    for number, page in enumerate(pages, start=1):
        if page.id in done or (number - shard) % shards:
            continue
        done[page.id] = scanned = scan(page, number, limits)
        _progress(f"OCR page {number}/{len(pages)}: {scanned.seconds:.1f} s")
        if args.cache is not None:
            row = {"id": page.id, "dpi": scanned.dpi, "kind": scanned.kind, "ocr_text": scanned.ocr_text}
            with args.cache.open("a") as cache:
                cache.write(json.dumps({**row, "seconds": scanned.seconds}) + "\n")
    scans = [done[page.id] for page in pages if page.id in done]
    seconds = sum(s.seconds for s in scans)
    print(f"\nScanned golden set {golden.name!r}: {len(scans)} of {len(pages)} pages recognised\n")
    print(cer_table(scans))
    rate = len(scans) / seconds
    print(f"\nOCR throughput, one worker: {rate:.3f} pages/s ({seconds:.0f} s for {len(scans)} pages)")
    if args.retrieval:
        ocr_pages = {s.page.id: Page(s.page.id, s.page.title, s.ocr_text) for s in scans}
        kept = [page for page in pages if page.id in ocr_pages]
        asked = [q for q in questions if q.relevant <= ocr_pages.keys()]
        print(f"Retrieval: {len(kept)} pages, {len(asked)} questions whose relevant pages are among them")
        text_set = GoldenSet(f"{golden.name}-text", tuple(kept), tuple(asked))
        ocr_set = GoldenSet(f"{golden.name}-ocr", tuple(ocr_pages[p.id] for p in kept), tuple(asked))
        modes = [RetrievalMode(mode) for mode in args.modes.split(",")]
        results = asyncio.run(_retrieval(text_set, ocr_set, modes))
        print()
        print(table(results))
        print()
        print(costs(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
