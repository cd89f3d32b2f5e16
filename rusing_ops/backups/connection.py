"""PyMySQL connections for dumping and loading: raw bytes in and out, login failures explained with the URL masked."""

from __future__ import annotations

import pymysql
import pymysql.converters

from ..core.database import explain_connection_error
from ..core.dburl import DatabaseURL

# Encoders only (keyed by Python type): parameters are still escaped, but every value comes back as raw bytes.
RAW_CONVERSIONS = {k: v for k, v in pymysql.converters.conversions.items() if isinstance(k, type)}


def open_connection(url: DatabaseURL, database: str | None = None, **kwargs):
    """An autocommit connection to ``database`` (default: the URL's; ``""`` for none) returning raw bytes.

    Login failures become :class:`DatabaseUnavailable` naming the masked URL.
    """
    try:
        return pymysql.connect(**url.pymysql_kwargs(database), use_unicode=False, conv=RAW_CONVERSIONS,
                               connect_timeout=10, autocommit=True, **kwargs)
    except pymysql.err.MySQLError as exc:
        raise explain_connection_error(exc, url.with_database(database or url.database)) from None
