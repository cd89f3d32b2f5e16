"""Load a file's checked statements (confine.py) into one database: INSERTs on parallel autocommit connections,
everything else in order.

Statements that define views, triggers, routines or events are not run here: they are returned, to be run in
the target database after the swap (triggers and views cannot move between databases with RENAME TABLE).
``USE``, ``CREATE``/``DROP``/``ALTER DATABASE`` and ``LOCK``/``UNLOCK TABLES`` come as ``skip``: the load goes to
the database it was given, and parallel connections must not lock each other out. An error names the line and the
kind of statement, never its text (a server message quoting the text is cut).
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pymysql

from ..core.database import as_text
from ..core.dburl import DatabaseURL
from ..core.errors import OpsError
from ..core.flavour import MARIADB, kind_from_version
from ..core.progress import Progress
from .confine import Action
from .connection import open_connection
from .deferkeys import split_create
from .sandbox import StagingUser
from .schema import strip_definer

WORKERS = 2  # research/bench.md §3: two loaders (myloader -t 2) beat one stream by 1.5x on this server
RETRIES = 3
# Secondary keys and foreign keys added after the rows (deferkeys.py). Off: measured slower end to end here
# (MariaDB 10.11, 128 MiB buffer pool: 1x restore 1.2-1.6x slower in 3 of 3 pairs; 4x 1.19x and 0.88x in two
# pairs, no gain shown; README Performance). Per table the late ALTER is at best ~10% faster here.
DEFER_KEYS = False
SESSION = ("SET NAMES utf8mb4, time_zone = '+00:00', FOREIGN_KEY_CHECKS = 0, UNIQUE_CHECKS = 0, "
           "sql_mode = 'NO_AUTO_VALUE_ON_ZERO', net_read_timeout = 3600")
# A table whose every text column is stored as UTF-8 (or ASCII) takes this tool's INSERTs under SET NAMES binary,
# as myloader loads: the server then stores the literal's bytes without decoding them as utf8mb4 character by
# character first (MariaDB 10.11, benchmark: 10-15% less server time for the same INSERTs). Only for this tool's own
# backups (their quoted literals are the UTF-8 bytes of utf8mb4/utf8mb3/ascii columns; any other character set is
# written as hex with its introducer) and only on MariaDB: MySQL and TiDB refuse binary strings for JSON columns.
# The checksum of the loaded copy still compares every value with what the backup's server read.
UTF8_CHARSETS = ("utf8mb4", "utf8mb3", "utf8", "ascii", "binary")
NAMES_BINARY, NAMES_TEXT = b"SET NAMES binary", b"SET NAMES utf8mb4"
# Server messages that quote the file's text or a row's values (1064 near, 1062 entry, 1366/1292 value).
_QUOTED = re.compile(r"(near|entry|value:?) '.*?'( at line \d+| for key| for column|$)", re.DOTALL)


class LoadFailed(OpsError):
    """A statement failed while loading into the staging database."""


@dataclass
class LoadResult:
    statements: int = 0
    rows: int = 0
    bytes: int = 0
    deferred: list[str] = field(default_factory=list)
    session: str = ""  # which account the statements ran as (sandbox.py)
    table_bytes: dict[str, int] = field(default_factory=dict)  # INSERT bytes per table: sizes right after the load
    as_bytes: list[str] = field(default_factory=list)  # tables loaded under SET NAMES binary (UTF8_CHARSETS)
    # Tables that took data after ``on_complete`` was called for them (more rows than the manifest said, e.g. an
    # edited file): whatever was hashed of them early is stale.
    late: set[str] = field(default_factory=set)


class _Worker(threading.Thread):
    def __init__(self, loader: Loader, conn):
        super().__init__(daemon=True, name="restore-load")
        self.loader, self.conn = loader, conn
        self.names: bytes | None = None  # the SET NAMES this connection is under (None: as the session set it)

    def execute(self, action: Action) -> int:
        """Run one autocommit INSERT; a deadlock rolled it back whole, so it is simply run again."""
        names = self.loader.names_for(action)
        if names is not None and names != self.names:
            with self.conn.cursor() as cur:
                cur.execute(names)
            self.names = names
        for attempt in range(RETRIES + 1):
            try:
                with self.conn.cursor() as cur:
                    return cur.execute(action.sql)
            except pymysql.err.OperationalError as exc:
                if exc.args[0] not in (1205, 1213) or attempt == RETRIES:  # lock wait timeout, deadlock
                    raise
        raise AssertionError("unreachable")

    def run(self) -> None:
        q = self.loader.queue
        while (action := q.get()) is not None:
            try:
                if self.loader.error is None:
                    self.loader.done(self.execute(action), len(action.sql), action.table)
            except BaseException as exc:  # handed to the loading thread, which raises it
                self.loader.error = self.loader.error or (exc, action)
            finally:
                q.task_done()
        q.task_done()


class Loader:
    """Run a file's checked statements in ``database``; ``load()`` returns the deferred schema statements."""

    def __init__(self, url: DatabaseURL, database: str, *, workers: int = WORKERS, progress: Progress | None = None,
                 defer_keys: bool | None = None, binary_names: bool = False,
                 expected_rows: dict[str, int] | None = None,
                 on_complete: Callable[[str, int], None] | None = None):
        """``binary_names``: the file is this tool's own backup (UTF8_CHARSETS above); used on MariaDB only.
        ``on_complete(table, nbytes)`` is called (from a loading thread) once a table holds ``expected_rows[table]``
        rows (``nbytes``: its INSERT bytes), so that it can be hashed while the rest loads (restore.py);
        ``LoadResult.late`` names the tables that took data after that."""
        self.url, self.database, self.progress = url, database, progress
        self.expected_rows, self.on_complete = expected_rows or {}, on_complete
        self._rows: dict[str, int] = {}
        self._actions: dict[str, int] = {}
        self._completed: dict[str, int] = {}  # table -> its data actions done when on_complete was called
        self.binary_names = binary_names
        self._utf8_tables: set[str] | None = None  # looked up at the first INSERT (every CREATE TABLE has run)
        self.defer_keys = DEFER_KEYS if defer_keys is None else defer_keys
        self.pending: list[Action] = []  # their ALTER TABLEs, run when the rows are in
        self.admin = open_connection(url, "")
        self.sandbox = StagingUser(self.admin, url, database, log=progress.log if progress else None)
        self.conns: list = []
        try:
            load_url = self.sandbox.__enter__()  # least privilege: a user that can touch `database` only
            for _ in range(max(workers, 1)):
                self.conns.append(open_connection(load_url, database))
                with self.conns[-1].cursor() as cur:
                    cur.execute(SESSION)
        except BaseException:
            self._release()
            raise
        if binary_names:
            with self.admin.cursor() as cur:
                cur.execute("SELECT VERSION(), @@version_comment")
                self.binary_names = kind_from_version(*(as_text(v or b"") for v in cur.fetchone())) == MARIADB
        self.queue: queue.Queue = queue.Queue(maxsize=2 * len(self.conns))
        self.error: tuple[BaseException, Action] | None = None
        self.result = LoadResult(session=self.sandbox.note)
        self._lock = threading.Lock()
        self.workers = [_Worker(self, c) for c in self.conns]
        for w in self.workers:
            w.start()

    def names_for(self, action: Action) -> bytes | None:
        """The SET NAMES an INSERT runs under: binary for a table whose text is all UTF-8 (binary_names), else
        utf8mb4 (what this tool's backups say); None for a file of another tool (its own SET NAMES holds)."""
        if not self.binary_names or action.table is None:
            return None
        return NAMES_BINARY if action.table in (self._utf8_tables or ()) else NAMES_TEXT

    def _look_up_utf8_tables(self) -> None:
        """The tables (created so far: at the first INSERT, all of a backup's) whose text columns are all UTF-8."""
        with self.admin.cursor() as cur:
            cur.execute("SELECT TABLE_NAME, SUM(CHARACTER_SET_NAME IS NOT NULL AND CHARACTER_SET_NAME NOT IN "
                        f"({', '.join(['%s'] * len(UTF8_CHARSETS))})) FROM information_schema.COLUMNS "
                        "WHERE TABLE_SCHEMA = %s GROUP BY TABLE_NAME", (*UTF8_CHARSETS, self.database))
            self._utf8_tables = {as_text(name) for name, other in cur.fetchall() if not int(other or 0)}

    def done(self, rows: int, nbytes: int, table: str | None = None) -> None:
        with self._lock:
            self.result.rows += rows
            self.result.bytes += nbytes
            if table is not None:
                self.result.table_bytes[table] = self.result.table_bytes.get(table, 0) + nbytes
                self._rows[table] = self._rows.get(table, 0) + rows
                self._actions[table] = self._actions.get(table, 0) + 1
                if (self.on_complete is not None and table not in self._completed
                        and self._rows[table] == self.expected_rows.get(table)):
                    self._completed[table] = self._actions[table]
                    self.on_complete(table, self.result.table_bytes[table])
            if self.progress:
                self.progress.advance(rows, nbytes)

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            exc, action = self.error
            detail = exc.args[-1] if isinstance(exc, pymysql.err.MySQLError) and exc.args else exc
            if isinstance(exc, OpsError):
                raise exc
            detail = _QUOTED.sub(lambda m: f"{m.group(1)} (text not shown){m.group(2)}", str(detail))
            raise LoadFailed(f"Loading into `{self.database}` failed at line {action.line} ({action.what}): "
                             f"{detail}.")

    def _barrier(self) -> None:
        self.queue.join()
        self._raise_if_failed()

    def load(self, actions: Iterable[Action]) -> LoadResult:
        try:
            for action in actions:
                self.result.statements += 1
                kind = action.kind
                if kind == "data":
                    self._raise_if_failed()
                    if self.binary_names and self._utf8_tables is None:
                        self._look_up_utf8_tables()
                    self.queue.put(action)
                    continue
                if kind == "skip":
                    continue
                if kind == "deferred":
                    self.result.deferred.append(strip_definer(action.sql.decode("utf-8", "replace")))
                    continue
                self._barrier()
                sql = action.sql
                if kind == "ddl" and self.defer_keys:
                    sql, alter = split_create(sql)
                    if alter is not None:
                        self.pending.append(Action("data", alter, action.line, "ALTER TABLE adding its keys"))
                    elif self.pending and not sql.lstrip().upper().startswith((b"CREATE TABLE", b"DROP TABLE")):
                        self._add_keys()  # another DDL may need them (an ALTER naming a key, a SETVAL...)
                targets = self.conns if kind == "session" else self.conns[:1]
                if kind == "session":  # e.g. the file's own SET NAMES: each connection's next INSERT sets its own
                    for worker in self.workers:
                        worker.names = None
                elif self.workers[0].names == NAMES_BINARY:  # DDL runs under the SET NAMES this tool's backups say
                    with self.conns[0].cursor() as cur:
                        cur.execute(NAMES_TEXT)
                    self.workers[0].names = NAMES_TEXT
                try:
                    for conn in targets:
                        with conn.cursor() as cur:
                            cur.execute(sql)
                except pymysql.err.MySQLError as exc:
                    self.error = (exc, action)
                    self._raise_if_failed()
            self._barrier()
            self._add_keys()
            if self.binary_names:
                self.result.as_bytes = sorted((self._utf8_tables or set()) & set(self.result.table_bytes))
            self.result.late = {t for t, n in self._completed.items() if self._actions.get(t) != n}
            return self.result
        finally:
            self.close()

    def _add_keys(self) -> None:
        """The deferred ALTER TABLEs, tables in parallel on the loading connections, then wait for them."""
        pending, self.pending = self.pending, []
        for action in pending:
            self._raise_if_failed()
            self.queue.put(action)
        self._barrier()

    def close(self) -> None:
        for w in self.workers:
            if w.is_alive():
                self.queue.put(None)
        for w in self.workers:
            w.join(timeout=30)
        self._release()

    def _release(self) -> None:
        conns, self.conns = self.conns, []
        if self.admin is None:
            return
        for conn in conns:
            try:
                conn.close()
            except Exception:
                pass
        admin, self.admin = self.admin, None
        try:
            self.sandbox.__exit__(None, None, None)  # the temporary user is dropped, also after a failure
            admin.close()
        except pymysql.err.MySQLError:
            pass  # the server went away: the failure that caused it is reported; sandbox.sweep drops the user later
