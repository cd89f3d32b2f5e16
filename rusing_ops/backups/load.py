"""Load SQL statements into one database: INSERTs on parallel autocommit connections, everything else in order.

Statements that define views, triggers, routines or events are not run here: they are returned, to be run in
the target database after the swap (triggers and views cannot move between databases with RENAME TABLE).
``USE``, ``CREATE DATABASE``, ``ALTER DATABASE`` and ``LOCK``/``UNLOCK TABLES`` are skipped: the load goes to
the database it was given, and parallel connections must not lock each other out.
"""

from __future__ import annotations

import queue
import re
import threading
from dataclasses import dataclass, field
from typing import Iterable

import pymysql

from ..core.dburl import DatabaseURL
from ..core.errors import OpsError
from ..core.progress import Progress
from .connection import open_connection
from .schema import strip_definer

WORKERS = 2  # research/bench.md §3: two loaders (myloader -t 2) beat one stream by 1.5x on this server
RETRIES = 3
SESSION = ("SET NAMES utf8mb4, time_zone = '+00:00', FOREIGN_KEY_CHECKS = 0, UNIQUE_CHECKS = 0, "
           "sql_mode = 'NO_AUTO_VALUE_ON_ZERO', net_read_timeout = 3600")
_VERSIONED = re.compile(rb"/\*!\d*|\*/")
_DEFERRED = re.compile(
    rb"\s*(?:CREATE|DROP)\s+(?:OR\s+REPLACE\s+)?(?:ALGORITHM\s*=\s*\w+\s+)?(?:SQL\s+SECURITY\s+\w+\s+)?"
    rb"(?:VIEW|TRIGGER|FUNCTION|PROCEDURE|EVENT)\b", re.I)
_SKIPPED = re.compile(rb"\s*(?:USE\b|CREATE\s+(?:DATABASE|SCHEMA)\b|ALTER\s+(?:DATABASE|SCHEMA)\b|LOCK\s+TABLES?\b|"
                      rb"UNLOCK\s+TABLES?\b)", re.I)


class LoadFailed(OpsError):
    """A statement failed while loading into the staging database."""


@dataclass
class LoadResult:
    statements: int = 0
    rows: int = 0
    bytes: int = 0
    deferred: list[str] = field(default_factory=list)


def classify(statement: bytes) -> str:
    """``data`` (INSERT/REPLACE), ``session`` (SET), ``deferred``, ``skip`` or ``ddl``."""
    if statement[:7].upper() in (b"INSERT ", b"REPLACE"):  # the common case, decided without decoding
        return "data"
    head = _VERSIONED.sub(b" ", statement[:400]).lstrip()
    head = strip_definer(head.decode("utf-8", "replace")).encode()
    if head[:6].upper().startswith((b"INSERT", b"REPLACE")):
        return "data"
    if head[:4].upper() in (b"SET ", b"SET\t", b"SET\n"):
        return "session"
    if _DEFERRED.match(head):
        return "deferred"
    if _SKIPPED.match(head):
        return "skip"
    return "ddl"


class _Worker(threading.Thread):
    def __init__(self, loader: "Loader", conn):
        super().__init__(daemon=True, name="restore-load")
        self.loader, self.conn = loader, conn

    def execute(self, stmt: bytes) -> int:
        """Run one autocommit INSERT; a deadlock rolled it back whole, so it is simply run again."""
        for attempt in range(RETRIES + 1):
            try:
                with self.conn.cursor() as cur:
                    return cur.execute(stmt)
            except pymysql.err.OperationalError as exc:
                if exc.args[0] not in (1205, 1213) or attempt == RETRIES:  # lock wait timeout, deadlock
                    raise
        raise AssertionError("unreachable")

    def run(self) -> None:
        q = self.loader.queue
        while (stmt := q.get()) is not None:
            try:
                if self.loader.error is None:
                    self.loader.done(self.execute(stmt), len(stmt))
            except BaseException as exc:
                self.loader.error = self.loader.error or (exc, stmt)
            finally:
                q.task_done()
        q.task_done()


class Loader:
    """Run a file's statements in ``database``; ``load()`` returns the deferred schema statements."""

    def __init__(self, url: DatabaseURL, database: str, *, workers: int = WORKERS, progress: Progress | None = None):
        self.url, self.database, self.progress = url, database, progress
        self.conns = [open_connection(url, database) for _ in range(max(workers, 1))]
        for conn in self.conns:
            with conn.cursor() as cur:
                cur.execute(SESSION)
        self.queue: queue.Queue = queue.Queue(maxsize=2 * len(self.conns))
        self.error: tuple[BaseException, bytes] | None = None
        self.result = LoadResult()
        self._lock = threading.Lock()
        self.workers = [_Worker(self, c) for c in self.conns]
        for w in self.workers:
            w.start()

    def done(self, rows: int, nbytes: int) -> None:
        with self._lock:
            self.result.rows += rows
            self.result.bytes += nbytes
            if self.progress:
                self.progress.advance(rows, nbytes)

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            exc, stmt = self.error
            detail = exc.args[-1] if isinstance(exc, pymysql.err.MySQLError) and exc.args else exc
            raise LoadFailed(f"Loading into `{self.database}` failed: {detail} (statement: "
                             f"{stmt[:120].decode('utf-8', 'replace')}...).")

    def _barrier(self) -> None:
        self.queue.join()
        self._raise_if_failed()

    def load(self, statements: Iterable[bytes]) -> LoadResult:
        try:
            for stmt in statements:
                self.result.statements += 1
                kind = classify(stmt)
                if kind == "data":
                    self._raise_if_failed()
                    self.queue.put(stmt)
                    continue
                if kind == "skip":
                    continue
                if kind == "deferred":
                    self.result.deferred.append(strip_definer(stmt.decode()))
                    continue
                self._barrier()
                targets = self.conns if kind == "session" else self.conns[:1]
                try:
                    for conn in targets:
                        with conn.cursor() as cur:
                            cur.execute(stmt)
                except pymysql.err.MySQLError as exc:
                    self.error = (exc, stmt)
                    self._raise_if_failed()
            self._barrier()
            return self.result
        finally:
            self.close()

    def close(self) -> None:
        for w in self.workers:
            if w.is_alive():
                self.queue.put(None)
        for w in self.workers:
            w.join(timeout=30)
        for conn in self.conns:
            try:
                conn.close()
            except Exception:
                pass
