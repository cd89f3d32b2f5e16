"""What a statement read from a backup or dump file may do: act on the staging (or scratch) database, nothing else.

Every statement is checked before it is sent: the first statement that breaks a rule refuses the restore, naming
its line and the kind of statement (never its text). A backup with a manifest is checked in one pass, as it is
loaded into the disposable staging database by a user granted on that database only (sandbox.py): a refusal drops
it, the target untouched (:func:`one_pass`). Any other file is first checked whole without running anything
(:func:`preflight`: it also tells a data-only dump, and refuses a second database named before the file's own),
then checked again as it is loaded, so a file replaced between the passes cannot slip a statement through either.

What a dump may contain (README "Restore: what a dump file may contain"):

- data: ``INSERT``/``REPLACE [IGNORE] INTO <table> [(<columns>)] VALUES`` followed by literal tuples only (numbers,
  strings, ``X'..'``, ``0x..``, ``NULL``): no function, subquery or comment among the values;
- schema, run in staging: ``CREATE``/``ALTER``/``DROP``/``RENAME``/``TRUNCATE TABLE``, ``CREATE``/``DROP INDEX``,
  ``CREATE``/``ALTER``/``DROP SEQUENCE``, ``DO``/``SELECT SETVAL(<sequence>, n, n)``; storage engines InnoDB,
  MyISAM, Aria, MEMORY, ARCHIVE, BLACKHOLE, SEQUENCE, RocksDB; no ``DATA``/``INDEX DIRECTORY``, no ``CONNECTION``;
- schema, deferred until after the swap: ``CREATE``/``DROP VIEW | TRIGGER | FUNCTION | PROCEDURE | EVENT``;
- session: ``SET`` of user variables and of the session's character sets, time zone, ``sql_mode`` (not a mode that
  changes how text is read: ``ANSI_QUOTES``, ``NO_BACKSLASH_ESCAPES``, ``ANSI``, ``ORACLE``...), foreign-key and
  unique checks, ``sql_notes``; ``SET sql_log_bin`` / ``autocommit`` and mysqldump's
  ``SET @@GLOBAL.GTID_PURGED='...'`` (the source's replication state) are skipped;
- mapped to staging: ``DROP``/``CREATE``/``ALTER DATABASE`` and ``USE`` of the dump's own database (the manifest's,
  else the one the file creates or uses) are skipped; a name qualified with it loses the qualifier;
  ``LOCK``/``UNLOCK TABLES``, ``COMMIT``, ``START TRANSACTION`` are skipped.

Refused: every other statement (``GRANT``, ``CREATE USER``, ``SET GLOBAL``, ``SET PASSWORD``, ``SHUTDOWN``, ``KILL``,
``INSTALL PLUGIN``, ``LOAD DATA``, ``SELECT``, ``CALL``, ``PREPARE``, ``FLUSH``, ``CHANGE MASTER``, ``PURGE``,
``HANDLER``...), these words anywhere in a schema statement (``OUTFILE``, ``DUMPFILE``, ``INFILE``, ``LOAD_FILE``,
``GRANT``, ``REVOKE``, ``PREPARE``, ``EXECUTE``, ``SHUTDOWN``, ``KILL``, ``INSTALL``, ``FLUSH``, ``PURGE``,
``HANDLER``, ``SONAME``...), and any name qualified with another database of the server, reads included: a view or
routine reading another database would tie the restored database to it. A second database in one file is refused.

Versioned comments are resolved as the server resolves them (MariaDB runs ``/*!NNNNN`` when NNNNN <= its version
and not 50700-99999, ``/*M!NNNNNN`` when <= its version; MySQL and TiDB run ``/*!NNNNN`` when <= theirs, TiDB runs
``/*T![feature] */``: checked as code there, dropped elsewhere) and a
schema or session statement is sent without them: what runs is exactly what was checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from ..core.errors import OpsError
from .confine_set import Refuse as _Refuse
from .confine_set import SessionSettings
from .sqlsplit import Token, tokens

SYSTEM_SCHEMAS = frozenset({"mysql", "information_schema", "performance_schema", "sys"})
NEXT = ("restore a backup taken by `rusing-ops db backup` (`rusing-ops db backups` lists them), or a "
        "mariadb-dump / mysqldump file of one database (README: what a dump file may contain).")

_NAME = rb"`[^`]*(?:``[^`]*)*`|[0-9A-Za-z_$\x80-\xff]+"
_INSERT_HEAD = re.compile(
    rb"\s*(?:INSERT|REPLACE)(?:\s+IGNORE)?\s+INTO\s+(?P<q>(?P<qual>" + _NAME + rb")\s*\.\s*)?(?P<table>" + _NAME +
    rb")\s*(?:\(\s*(?:" + _NAME + rb")(?:\s*,\s*(?:" + _NAME + rb"))*\s*\)\s*)?VALUES\s*(?=\()", re.IGNORECASE)
# The literal check of an INSERT's values runs at C speed (issue 15: it was 1.4 s of regex work per 1x restore):
# each escape ``\\x`` becomes a lone ``\\`` (so no escaped quote is left), then the text splits at its quotes: the
# even parts are what lies outside the string literals (``'a''b'`` splits into two adjacent literals, the same
# outside text). A backslash outside a literal stays and is refused, as is an odd number of quotes (unclosed).
_VALUE_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_VALUE_BYTES = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_ \t\r\n(),.+-"
# Separators to spaces and digits to 0: what remains splits into runs of [0-9A-Za-z_]; a run starting with a letter
# or _ is a word (a run starting with a digit is a number: 0x1F, 1e5), and few distinct runs remain. A word with
# a digit (_utf8mb4 reads _utf0mb0) is checked again exactly.
_VALUE_RUNS = bytes.maketrans(b"(),.+-\t\r\n0123456789", b"         0000000000")
# A string literal's character set introducer (``_cp1251 X'..'``: how a backup writes a column of another character
# set, dump.py) is a label, not code: every character set MariaDB and MySQL 8 know.
CHARSETS = frozenset({
    "armscii8", "ascii", "big5", "binary", "cp1250", "cp1251", "cp1256", "cp1257", "cp850", "cp852", "cp866", "cp932",
    "dec8", "eucjpms", "euckr", "gb18030", "gb2312", "gbk", "geostd8", "greek", "hebrew", "hp8", "keybcs2", "koi8r",
    "koi8u", "latin1", "latin2", "latin5", "latin7", "macce", "macroman", "sjis", "swe7", "tis620", "ucs2", "ujis",
    "utf16", "utf16le", "utf32", "utf8", "utf8mb3", "utf8mb4"})
_LITERAL_WORDS = frozenset({b"NULL", b"X", b"B", b"N"} | {b"_" + c.upper().encode() for c in CHARSETS})
_LITERAL_RUNS = frozenset(w.translate(_VALUE_RUNS) for w in _LITERAL_WORDS)
_VALUE_WORD = re.compile(rb"(?<![0-9A-Za-z_])[A-Za-z_][0-9A-Za-z_]*")
_VERSION = re.compile(rb"/\*(M?|T)!(\d*)")
# A value too large for one statement is built in a user variable by SETs of literals, then inserted (pieces.py).
_PIECE_VAR = re.compile(rb"@rusing_ops_b[0-9]+_[0-9]+(?![0-9A-Za-z_$])")


def outside_py(values: bytes) -> tuple[bytes, bool]:
    """The text of ``values`` outside its string literals, and whether its quotes pair up (see above);
    ``_speedups.outside`` is this function in one C pass, result for result."""
    parts = (_VALUE_ESCAPE.sub(b"\\\\", values) if b"\\" in values else values).split(b"'")
    return b"".join(parts[::2]), len(parts) % 2 == 1


try:
    from ._speedups import outside as _outside
except ImportError:  # pragma: no cover - no C compiler at install (rawrows.ACCELERATED is False too)
    _outside = outside_py


OBJECTS = frozenset({"TABLE", "TABLES", "INDEX", "SEQUENCE", "VIEW", "TRIGGER", "FUNCTION", "PROCEDURE", "EVENT",
                     "DATABASE", "SCHEMA", "USER", "ROLE", "SERVER", "TABLESPACE", "PACKAGE", "LOGFILE"})
SCHEMA_RUN = {("CREATE", "TABLE"), ("ALTER", "TABLE"), ("DROP", "TABLE"), ("RENAME", "TABLE"), ("TRUNCATE", "TABLE"),
              ("CREATE", "INDEX"), ("DROP", "INDEX"), ("CREATE", "SEQUENCE"), ("ALTER", "SEQUENCE"),
              ("DROP", "SEQUENCE")}
DEFERRED = {(verb, obj) for verb in ("CREATE", "DROP") for obj in ("VIEW", "TRIGGER", "FUNCTION", "PROCEDURE", "EVENT")}
FORBIDDEN = frozenset({"OUTFILE", "DUMPFILE", "INFILE", "LOAD_FILE", "GRANT", "REVOKE", "PREPARE", "EXECUTE",
                       "DEALLOCATE", "SHUTDOWN", "KILL", "INSTALL", "UNINSTALL", "FLUSH", "PURGE", "HANDLER", "SONAME",
                       "BINLOG", "MASTER", "REPLICA", "SLAVE"})
ENGINES = frozenset({"INNODB", "MYISAM", "ARIA", "MEMORY", "HEAP", "ARCHIVE", "BLACKHOLE", "SEQUENCE", "ROCKSDB"})
KEYWORDS = frozenset({"GRANT", "REVOKE", "SHUTDOWN", "KILL", "INSTALL", "UNINSTALL", "LOAD", "SELECT", "FLUSH",
                      "CHANGE", "PURGE", "HANDLER", "CALL", "PREPARE", "EXECUTE", "DEALLOCATE", "DO", "UPDATE",
                      "DELETE", "RESET", "START", "STOP", "BINLOG", "CREATE", "DROP", "ALTER", "RENAME", "SHOW",
                      "DESCRIBE", "EXPLAIN", "OPTIMIZE", "ANALYZE", "REPAIR", "CHECK", "CHECKSUM", "BACKUP", "XA",
                      "SAVEPOINT", "ROLLBACK", "RELEASE", "WITH", "VALUES", "TABLE", "IMPORT", "SIGNAL", "GET",
                      "HELP", "CACHE", "SET", "INSERT", "REPLACE", "TRUNCATE", "USE", "LOCK", "UNLOCK"})
class DumpRefused(OpsError):
    """A statement of a backup or dump file would act outside the staging database, or is not data or schema."""


@dataclass
class Scope:
    """What a check needs to know about the server and the file."""

    label: str  # the backup key or file path, for messages
    staging: str  # the database the file's statements go to
    others: frozenset[str]  # lower-cased names of the server's databases (system schemas included)
    version: int = 101100  # server version as versioned comments count it (10.11.0 -> 101100)
    mariadb: bool = True
    own: str | None = None  # the dump's own database (manifest's, or the file's header, USE, CREATE DATABASE)
    tidb: bool = False


@dataclass
class Action:
    kind: str  # data | session | ddl | deferred | skip
    sql: bytes
    line: int
    what: str  # the statement's kind, for messages (never its text)
    table: str | None = None  # an INSERT's table (the loader counts its bytes: restore plans the checksum by them)


def server_scope(conn, label: str, staging: str, own: str | None) -> Scope:
    """A :class:`Scope` from the server behind ``conn`` (read only: the version and the databases' names)."""
    with conn.cursor() as cur:
        cur.execute("SELECT VERSION()")
        version = _text(cur.fetchone()[0])
        cur.execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA")
        names = {_text(r[0]).lower() for r in cur.fetchall()}
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    number = int(m.group(1)) * 10000 + int(m.group(2)) * 100 + int(m.group(3)) if m else 50700
    return Scope(label, staging, frozenset(names | SYSTEM_SCHEMAS), number, "mariadb" in version.lower(), own=own,
                 tidb="tidb" in version.lower())


def _text(value) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


class Confiner:
    """Checks a file's statements in order (it follows the file's ``USE`` and ``SET``); one per pass."""

    def __init__(self, scope: Scope, *, loading: bool = False):
        self.scope, self.loading = scope, loading
        self.own = scope.own
        self.learned = scope.own is not None
        self.pending: list[tuple[int, str, str]] = []  # (line, what, name): a database named before the file's own
        self.settings = SessionSettings()  # follows the file's SET statements (confine_set.py)
        self.created: set[str] = set()  # tables the file creates
        self.mentioned: set[str] = set()  # tables it locks or alters (a data-only dump names its empty ones so)
        self.filled: dict[str, int] = {}  # table -> line of its first INSERT
        self.count = 0

    # --------------------------------------------------------------------------------------------- interface

    def check(self, line: int, stmt: bytes) -> Action:
        """The action for one statement, or :class:`DumpRefused` naming its line."""
        self.count += 1
        try:
            if stmt[:7].upper() in (b"INSERT ", b"REPLACE", b"INSERT\n"):
                return self._insert(line, stmt)
            return self._statement(line, stmt)
        except _Refuse as exc:
            raise self.refusal(line, exc.reason) from None
        except (IndexError, ValueError, UnicodeError):  # never let an unforeseen form through: refuse it
            raise self.refusal(line, "a statement in a form this check cannot read") from None

    def finish(self) -> None:
        """After the last statement: a database dropped or altered but never the file's own is refused."""
        for line, what, name in self.pending:
            if name != self.own:
                raise self.refusal(line, f"{what} names a database that is not the dump's own ({self._named(name)})")

    def refusal(self, line: int, reason: str) -> DumpRefused:
        if self.loading:
            done = (f"The statements before it ran in `{self.scope.staging}` only (it is dropped); the target "
                    "database was not touched.")
        else:
            done = "No statement of the file was run."
        return DumpRefused(f"{self.scope.label!r} line {line}: {reason}; the restore is refused. {done}",
                           next_step=NEXT, line=line)

    # --------------------------------------------------------------------------------------------- data

    def _insert(self, line: int, stmt: bytes) -> Action:
        m = _INSERT_HEAD.match(stmt)
        if m is None:
            raise _Refuse("an INSERT in a form dumps do not write (only INSERT/REPLACE [IGNORE] INTO <table> "
                          "[(<columns>)] VALUES ...)")
        sql = stmt
        if m.group("qual") is not None:
            qual = _unquote(m.group("qual"))
            if qual != self.own:
                raise _Refuse(f"an INSERT into another database ({self._named(qual)})")
            sql = stmt[:m.start("q")] + stmt[m.end("q"):]
        rest, closed = _outside(stmt[m.end():])  # the text outside the string literals; quotes paired
        if b"@" in rest:
            rest = _PIECE_VAR.sub(b"NULL", rest)
        if not closed or rest.translate(None, _VALUE_BYTES) or b"--" in rest:
            raise _Refuse("an INSERT whose values are not plain literals")
        words = {run.upper() for run in set(rest.translate(_VALUE_RUNS).split()) if run[:1] != b"0"}
        if not words <= _LITERAL_RUNS or any(b"0" in w for w in words) and (
                {w.upper() for w in _VALUE_WORD.findall(rest)} - _LITERAL_WORDS):  # _UTF8MB4 as _UTF0MB0: exactly
            raise _Refuse("an INSERT whose values are not plain literals (a function, subquery or keyword)")
        table = _unquote(m.group("table"))
        self.filled.setdefault(table, line)
        return Action("data", sql, line, "INSERT", table)

    # --------------------------------------------------------------------------------------------- the rest

    def _statement(self, line: int, stmt: bytes) -> Action:
        out = self._resolved(tokens(stmt))
        code = [i for i, t in enumerate(out) if t.kind not in ("space", "comment")]
        if not code:
            return Action("skip", b"", line, "comment")
        words = [out[i].upper if out[i].kind == "word" else "" for i in code]
        first = words[0]
        if first in ("INSERT", "REPLACE"):
            return self._insert(line, b"".join(t.text for t in out))
        if first == "SET":
            kind = self.settings.check([out[i] for i in code[1:]])
            return Action(kind, _join(out) if kind != "skip" else b"", line, "SET")
        if first in ("LOCK", "UNLOCK") and len(words) > 1 and words[1] in ("TABLE", "TABLES"):
            for n in range(2, len(code)):  # LOCK TABLES `a` WRITE, `b` READ
                if out[code[n]].kind in ("ident", "word") and (n == 2 or out[code[n - 1]].text == b","):
                    self.mentioned.add(out[code[n]].name)
            return Action("skip", b"", line, f"{first} TABLES")
        if first == "COMMIT" or (first == "START" and words[1:2] == ["TRANSACTION"]) or words == ["BEGIN"]:
            return Action("skip", b"", line, first)
        if first == "USE":
            self._database(line, "USE", out[code[1]] if len(code) > 1 else None, learn=True)
            return Action("skip", b"", line, "USE")
        obj = next((w for w in words[1:12] if w in OBJECTS), "")
        what = (f"{first} {obj}".strip() if first in ("CREATE", "DROP", "ALTER", "RENAME", "TRUNCATE") else first
                ) if first in KEYWORDS else "an unrecognised statement"
        if first in ("CREATE", "DROP", "ALTER") and obj in ("DATABASE", "SCHEMA"):
            at = words.index(obj)
            rest = [out[i] for i in code[at + 1:]]
            while rest and rest[0].upper in ("IF", "NOT", "EXISTS"):
                rest = rest[1:]
            if first == "ALTER" and (not rest or rest[0].upper in ("DEFAULT", "CHARACTER", "CHARSET", "COLLATE",
                                                                   "COMMENT", "UPGRADE")):
                return Action("skip", b"", line, what)  # the default database: staging
            self._database(line, what, rest[0] if rest else None, learn=first == "CREATE")
            return Action("skip", b"", line, what)
        if first in ("DO", "SELECT") and self._setval(out, code):
            self._qualifiers(out, code)
            return Action("ddl", _join(out), line, f"{first} SETVAL")
        if first == "TRUNCATE":
            obj = "TABLE"
        key = (first, obj)
        if key not in SCHEMA_RUN and key not in DEFERRED:
            shown = what if what.startswith("an ") else f"{'an' if what[0] in 'AEIOU' else 'a'} {what} statement"
            raise _Refuse(f"{shown} (only data and schema statements may be in a dump)")
        for i, w in enumerate(words):
            if w in FORBIDDEN:
                raise _Refuse(f"{what} containing {w}")
            if w in ("CREATE", "ALTER", "DROP", "RENAME") and words[i + 1:i + 2] and words[i + 1] in (
                    "USER", "ROLE", "SERVER"):
                raise _Refuse(f"{what} containing {w} {words[i + 1]}")
            if w == "SET" and words[i + 1:i + 2] and words[i + 1] in ("GLOBAL", "PASSWORD", "ROLE", "PERSIST"):
                raise _Refuse(f"{what} containing SET {words[i + 1]}")
        for n, i in enumerate(code):
            t = out[i]
            if t.kind == "var" and t.upper.startswith("@@GLOBAL.") and n + 1 < len(code) \
                    and out[code[n + 1]].text in (b"=", b":"):
                raise _Refuse(f"{what} setting a global server variable")
        if obj in ("TABLE", "SEQUENCE") and first in ("CREATE", "ALTER"):
            self._table_options(words, out, code, what)
        self._qualifiers(out, code)
        if key in (("CREATE", "TABLE"), ("ALTER", "TABLE")):
            name = self._created_name(out, code)
            if name:
                (self.created if first == "CREATE" else self.mentioned).add(name)
        return Action("deferred" if key in DEFERRED else "ddl", _join(out), line, what)

    def _resolved(self, toks: list[Token]) -> list[Token]:
        """The tokens the server would run: versioned comments resolved, their markers turned into spaces."""
        out: list[Token] = []
        state = None  # None outside a versioned comment, else "run" or "skip"
        for t in toks:
            if t.kind == "vopen":
                if state is not None:
                    raise _Refuse("a versioned comment inside another")
                state = "run" if self._runs(t.text) else "skip"
                out.append(Token("space", b" "))
            elif t.kind == "vclose" and state is not None:
                state = None
                out.append(Token("space", b" "))
            elif state == "skip":
                continue
            elif t.kind == "comment" and state == "run":
                raise _Refuse("a comment inside a versioned comment")
            elif t.kind == "punct" and t.text in (b"'", b'"', b"`"):
                raise _Refuse("an unclosed quote")
            else:
                out.append(t)
        if state is not None:
            raise _Refuse("an unclosed versioned comment")
        return out

    def _runs(self, marker: bytes) -> bool:
        m = _VERSION.match(marker)
        if m.group(1) == b"T":
            return self.scope.tidb  # TiDB runs /*T![feature] ...*/ (checked as code there); a comment elsewhere
        maria, digits = m.group(1) == b"M", m.group(2)
        if maria and not self.scope.mariadb:
            return False  # a plain comment for MySQL and TiDB
        if not digits:
            return True
        if len(digits) not in (5, 6):
            raise _Refuse("a versioned comment with a malformed version")
        version = int(digits)
        if self.scope.mariadb:
            return version <= self.scope.version and (version < 50700 or version > 99999 or maria)
        return version <= self.scope.version

    def _named(self, name: str) -> str:
        """A database name for a message: only one the server has (the file's other text is never printed)."""
        return f"`{name}`" if name.lower() in self.scope.others else "a database this server does not have"

    def _database(self, line: int, what: str, tok: Token | None, *, learn: bool) -> None:
        if tok is None or tok.kind not in ("word", "ident"):
            raise _Refuse(f"{what} without a database name")
        name = tok.name
        if name.lower() in SYSTEM_SCHEMAS:
            raise _Refuse(f"{what} of the system database `{name}`")
        if self.own is None:
            if not learn:
                self.pending.append((line, what, name))
                return
            self.own = name
            for p_line, p_what, p_name in self.pending:
                if p_name != name:
                    raise self.refusal(p_line, f"{p_what} names a database that is not the dump's own "
                                               f"({self._named(p_name)})")
            self.pending = []
        elif name != self.own:
            raise _Refuse(f"{what} of a second database ({self._named(name)}; the dump's own is `{self.own}`)")

    def _qualifiers(self, out: list[Token], code: list[int]) -> None:
        """``own.x`` loses its qualifier; ``other.x`` naming a database of the server is refused."""
        drop: list[int] = []
        for n, i in enumerate(code):
            t = out[i]
            if t.kind not in ("word", "ident") or n + 2 >= len(code) or out[code[n + 1]].text != b".":
                continue
            if n > 0 and out[code[n - 1]].text == b".":
                continue  # the middle of a.b.c: only a names a database
            if t.kind == "word" and t.text.isdigit():
                continue  # a number: 1.5
            name = t.name
            if name == self.own:
                drop.extend(range(i, code[n + 1] + 1))
            elif name.lower() in self.scope.others and name != self.scope.staging:
                raise _Refuse(f"a name in another database ({self._named(name)})")
        for i in reversed(drop):
            del out[i]
        if drop:  # indexes moved
            code[:] = [i for i, t in enumerate(out) if t.kind not in ("space", "comment")]

    def _table_options(self, words: list[str], out: list[Token], code: list[int], what: str) -> None:
        for n, w in enumerate(words):
            if w in ("DIRECTORY", "CONNECTION"):
                raise _Refuse(f"{what} with a {w} option")
            if w == "ENGINE":
                rest = [out[i] for i in code[n + 1:n + 3] if out[i].text != b"="]
                if not rest or rest[0].name.upper() not in ENGINES:
                    raise _Refuse(f"{what} with a storage engine other than {', '.join(sorted(ENGINES))}")

    @staticmethod
    def _created_name(out: list[Token], code: list[int]) -> str | None:
        for n, i in enumerate(code):
            if out[i].upper == "TABLE":
                rest = [out[j] for j in code[n + 1:]]
                while rest and rest[0].upper in ("IF", "NOT", "EXISTS"):
                    rest = rest[1:]
                return rest[0].name if rest and rest[0].kind in ("word", "ident") else None
        return None

    @staticmethod
    def _setval(out: list[Token], code: list[int]) -> bool:
        """``DO SETVAL(`seq`, 1001, 0)`` as mariadb-dump writes for a sequence (qualified or not)."""
        t = [out[i] for i in code[1:]]
        if not t or t[0].upper != "SETVAL" or t[1:2] != [Token("punct", b"(")] or t[-1].text != b")":
            return False
        inner = t[2:-1]
        while len(inner) >= 3 and inner[1].text == b".":
            inner = inner[2:]
        args = [x for x in inner[1:] if x.text != b","]
        return bool(inner) and inner[0].kind in ("word", "ident") and 2 <= len(args) <= 3 and all(
            x.kind == "word" and x.text.isdigit() or x.text == b"-" for x in args)


def _unquote(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text[1:-1].replace("``", "`") if text.startswith("`") else text


def _join(out: list[Token]) -> bytes:
    return b"".join(t.text for t in out).strip()


# ------------------------------------------------------------------------------------------------- the passes


class _Statements(Protocol):
    label: str

    def numbered_statements(self) -> Iterator[tuple[int, bytes]]: ...


@dataclass
class Plan:
    """A file to load: :meth:`actions` reads it, checking each statement it yields (again, after a preflight)."""

    source: _Statements
    scope: Scope
    statements: int | None  # counted by a preflight; None when checked only while loading (one_pass)
    data_only: list[str]  # a dump without CREATE TABLE (--no-create-info): the tables it fills

    def actions(self) -> Iterator[Action]:
        confiner = Confiner(self.scope, loading=True)
        for line, stmt in self.source.numbered_statements():
            yield confiner.check(line, stmt)
        confiner.finish()


def one_pass(source: _Statements, scope: Scope) -> Plan:
    """A backup with a manifest (``scope.own`` is its database): nothing is read ahead; :meth:`Plan.actions` checks
    each statement as the load reads it. Its integrity is the manifest's sha256, checked when the reading ends
    (source.py); the row counts and server checksums of the loaded copy are compared before any swap (restore.py).
    """
    return Plan(source, scope, None, [])


def preflight(source: _Statements, scope: Scope) -> Plan:
    """Check every statement of ``source`` without running any; :class:`DumpRefused` names the first bad line.

    A file without any CREATE TABLE is a data-only dump (``Plan.data_only`` names its tables: dataonly.py).
    """
    manifest_backed = getattr(source, "manifest", None) is not None
    confiner = Confiner(scope)
    for line, stmt in source.numbered_statements():
        confiner.check(line, stmt)
    confiner.finish()
    if confiner.count == 0:
        raise DumpRefused(f"{scope.label!r} holds no SQL statement; the restore is refused.", next_step=NEXT)
    missing = sorted(set(confiner.filled) - confiner.created)
    if missing and confiner.created:
        line = min(confiner.filled[t] for t in missing)
        raise confiner.refusal(line, f"rows for {len(missing)} table(s) the file does not create, beside tables it "
                                     "does create: a restore replaces whole tables, so it needs every table's CREATE "
                                     "TABLE, or none (a data-only dump, --no-create-info)")
    data_only = sorted(set(confiner.filled) | confiner.mentioned) if not confiner.created else []
    if not confiner.created and not data_only and not manifest_backed:
        raise DumpRefused(f"{scope.label!r} creates no table and holds no rows: restoring it would empty the target. "
                          "The restore is refused; no statement of the file was run.", next_step=NEXT)
    scope.own = confiner.own
    return Plan(source, scope, confiner.count, data_only)
