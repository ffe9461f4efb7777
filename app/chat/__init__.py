"""The chat pipeline: memory → answer cache → query embedding → retrieval → prompt → router."""
