"""``EMBEDDING_PROVIDER=openai``."""

from __future__ import annotations

from collections.abc import Sequence

from app.rag.embeddings.base import EmbedderBase, EmbeddingError, batches, check_dimension


class OpenAIEmbedder(EmbedderBase):
    """OpenAI's ``/v1/embeddings`` through the official SDK (``OPENAI_BASE_URL`` includes /v1)."""

    def __init__(
        self,
        model_name: str,
        dimension: int,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout_s: float = 30.0,
        batch_size: int = 64,
    ) -> None:
        from openai import AsyncOpenAI

        super().__init__(model_name, dimension, batch_size)
        self._client = AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=2)

    async def embed_documents(self, texts: Sequence[str]) -> list[list[float]]:
        import openai

        vectors: list[list[float]] = []
        for batch in batches(texts, self._batch_size):
            try:
                response = await self._client.embeddings.create(
                    model=self._name, input=list(batch), dimensions=self._dimension
                )
            except openai.OpenAIError as exc:
                raise EmbeddingError(f"OpenAI embeddings failed: {exc}") from exc
            ordered = sorted(response.data, key=lambda item: item.index)
            if len(ordered) != len(batch):
                raise EmbeddingError(f"OpenAI returned {len(ordered)} embeddings for {len(batch)} texts")
            vectors.extend([list(item.embedding) for item in ordered])
        return check_dimension(vectors, self._dimension, self._name)

    async def aclose(self) -> None:
        await self._client.close()
