"""ASGI entry point for gunicorn/uvicorn workers; settings (with resolved URLs) come from the
environment that the `serve` launcher prepared."""

from app.main import create_app

app = create_app()
