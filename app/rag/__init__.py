"""Retrieval-augmented generation: embeddings, retrieval, prompt building and the answer pipeline."""
