"""Conversation memory: a Redis window in front of the durable PostgreSQL history."""
