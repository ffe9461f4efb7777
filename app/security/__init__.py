"""Hardening: security headers, body size limits, trusted proxies, audit log, prompt-injection flags."""
