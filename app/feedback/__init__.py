"""Answer feedback: who received which answer (a short-lived record per answered turn, in Redis),
and the scores principals give those answers (durable, in PostgreSQL; also sent to Langfuse and
counted in metrics)."""
