"""Naive baselines on the same golden set, outside the service, for reference: 200-word chunks
(no overlap, no titles), ranked by exact cosine over the same embedding model, by plain Okapi
BM25 (lower-cased words, no stemming), and by reciprocal-rank fusion of the two (k = 60).
Each chunk ranking becomes a page ranking by first occurrence, as the service's sources do."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

from app.rag.embeddings import Embedder
from scripts.eval.golden import GoldenSet, Scores, distinct, score

CHUNK_WORDS = 200
RRF_K = 60
_WORD = re.compile(r"\w+")


def _chunks(golden: GoldenSet) -> list[tuple[str, str]]:
    chunks = []
    for page in golden.pages:
        words = page.text.split()
        for start in range(0, len(words), CHUNK_WORDS):
            chunks.append((page.id, " ".join(words[start : start + CHUNK_WORDS])))
    return chunks


class _BM25:
    def __init__(self, texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        self.docs = [Counter(_WORD.findall(text.lower())) for text in texts]
        self.lengths = [sum(doc.values()) for doc in self.docs]
        self.average = sum(self.lengths) / len(self.lengths)
        frequency: Counter[str] = Counter()
        for doc in self.docs:
            frequency.update(doc.keys())
        n = len(self.docs)
        self.idf = {term: math.log(1 + (n - df + 0.5) / (df + 0.5)) for term, df in frequency.items()}
        self.k1, self.b = k1, b

    def ranking(self, query: str) -> list[int]:
        terms = set(_WORD.findall(query.lower()))
        scores = []
        for index, doc in enumerate(self.docs):
            norm = self.k1 * (1 - self.b + self.b * self.lengths[index] / self.average)
            total = sum(self.idf[t] * doc[t] * (self.k1 + 1) / (doc[t] + norm) for t in terms if t in doc)
            scores.append(total)
        return sorted(range(len(scores)), key=lambda i: -scores[i])


async def naive_baselines(golden: GoldenSet, embedder: Embedder) -> list[tuple[str, Scores]]:
    chunks = _chunks(golden)
    vectors = np.asarray(await embedder.embed_documents([text for _, text in chunks]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    bm25 = _BM25([text for _, text in chunks])
    dense_runs, text_runs, fused_runs = [], [], []
    for question in golden.questions:
        query = np.asarray(await embedder.embed_query(question.text), dtype=np.float32)
        dense = list(np.argsort(-(vectors @ (query / np.linalg.norm(query)))))
        lexical = bm25.ranking(question.text)
        fused: dict[int, float] = {}
        for ranking in (dense[:100], lexical[:100]):
            for rank, index in enumerate(ranking, start=1):
                fused[int(index)] = fused.get(int(index), 0.0) + 1.0 / (RRF_K + rank)
        by_fusion = sorted(fused, key=lambda i: -fused[i])
        for runs, ranking in ((dense_runs, dense), (text_runs, lexical), (fused_runs, by_fusion)):
            runs.append((distinct(chunks[int(i)][0] for i in ranking)[:10], question.relevant))
    return [
        ("exact dense", score(dense_runs)),
        ("BM25", score(text_runs)),
        ("RRF(dense, BM25)", score(fused_runs)),
    ]
