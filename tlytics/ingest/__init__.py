"""The ingest server: aiohttp app, handlers and the spool-to-store writer."""

from tlytics.ingest.app import create_app
from tlytics.ingest.settings import Settings

__all__ = ["Settings", "create_app"]
