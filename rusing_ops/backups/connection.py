"""PyMySQL connections for dumping and loading: raw bytes in and out (the connection layer's ``raw_connect``)."""

from __future__ import annotations

from ..core.database import RAW_CONVERSIONS, raw_connect
from ..core.dburl import DatabaseURL

__all__ = ["RAW_CONVERSIONS", "open_connection"]


def open_connection(url: DatabaseURL, database: str | None = None, **kwargs):
    """An autocommit connection to ``database`` (default: the URL's; ``""`` for none) returning raw bytes, with
    every option of the URL (TLS included). Login and TLS failures become :class:`DatabaseUnavailable`."""
    return raw_connect(url, database, **kwargs)
