"""Logging, tracing and metrics."""
