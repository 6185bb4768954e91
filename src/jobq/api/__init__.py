"""The HTTP API: FastAPI routes over a JobQueue."""

from .app import create_app

__all__ = ["create_app"]
