"""``EMBEDDING_PROVIDER=gemini``."""

from __future__ import annotations

from collections.abc import Sequence

from app.rag.embeddings.base import EmbedderBase, EmbeddingError, batches, check_dimension


class GeminiEmbedder(EmbedderBase):
    """Gemini's ``batchEmbedContents`` through ``google-genai`` (``GEMINI_BASE_URL`` is the API root)."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 100,
    ) -> None:
        from app.llm.gemini import GeminiClient  # the one place a Gemini client is built

        super().__init__(model_name, dimension, batch_size)
        self._gemini = GeminiClient.build(
            api_key, base_url, connect_timeout_s=timeout_s, total_timeout_s=timeout_s, attempts=2
        )

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        from google.genai import errors, types

        vectors: list[list[float]] = []
        config = types.EmbedContentConfig(output_dimensionality=self._dimension)
        for batch in batches(texts, self._batch_size):
            try:
                response = await self._gemini.sdk.aio.models.embed_content(
                    model=self._name, contents=list[types.ContentUnion](batch), config=config
                )
            except errors.APIError as exc:
                raise EmbeddingError(f"Gemini embeddings failed: {exc}") from exc
            embeddings = response.embeddings or []
            if len(embeddings) != len(batch):
                raise EmbeddingError(f"Gemini returned {len(embeddings)} embeddings for {len(batch)} texts")
            vectors.extend([list(item.values or []) for item in embeddings])
        return check_dimension(vectors, self._dimension, self._name)

    async def aclose(self) -> None:
        await self._gemini.aclose()
