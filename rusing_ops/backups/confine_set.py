"""The ``SET`` statements a dump may hold (confine.py): user variables and the session settings a dump needs.

Character sets and ``sql_mode`` decide how the following statements are read, so only values this project's lexer
reads the same way are accepted: utf8*, latin1*, ascii, binary; no ``ANSI_QUOTES``, ``NO_BACKSLASH_ESCAPES``,
``ANSI``, ``ORACLE``...; from a variable only when it holds a saved copy of that setting (``SET @OLD_SQL_MODE =
@@SQL_MODE`` ... ``SET SQL_MODE = @OLD_SQL_MODE``). ``sql_log_bin``, ``autocommit`` and mysqldump's
``@@GLOBAL.GTID_PURGED`` are skipped; any other global setting, ``PASSWORD``, ``ROLE``, ``TRANSACTION`` is refused.
"""

from __future__ import annotations

import re

from .sqlsplit import Token

SESSION_VARS = frozenset({"character_set_client", "character_set_results", "character_set_connection",
                          "collation_connection", "time_zone", "sql_mode", "foreign_key_checks", "unique_checks",
                          "sql_notes", "sql_warnings", "check_constraint_checks", "sql_quote_show_create",
                          "innodb_strict_mode", "sql_auto_is_null", "explicit_defaults_for_timestamp",
                          "information_schema_stats_expiry"})
SKIPPED_VARS = frozenset({"sql_log_bin", "autocommit"})
TEXT_VARS = frozenset({"character_set_client", "character_set_results", "character_set_connection",
                       "collation_connection", "sql_mode"})  # values that change how the next statements are read
BAD_MODES = frozenset({"ANSI_QUOTES", "NO_BACKSLASH_ESCAPES", "ANSI", "ORACLE", "MSSQL", "DB2", "POSTGRESQL",
                       "MAXDB", "MYSQL323", "MYSQL40"})
_CHARSET_OK = re.compile(r"(?:utf8|latin1|ascii|binary|default)\w*", re.IGNORECASE)
SET_FUNCTIONS = frozenset({"IFNULL", "IF", "COALESCE", "CONCAT"})


class Refuse(Exception):
    """A statement breaks a rule; ``reason`` says which, without the statement's text."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SessionSettings:
    """Checks a file's ``SET`` statements in order; remembers which user variables hold a copy of a setting."""

    def __init__(self):
        self.copies: dict[str, str] = {}  # user variable -> the session variable it holds a copy of

    def check(self, toks: list[Token]) -> str:
        """``session`` (run on every loading connection) or ``skip`` for the tokens after ``SET``."""
        if not toks:
            raise Refuse("a SET without an assignment")
        if toks[0].upper == "@@GLOBAL.GTID_PURGED" and toks[1:2] and toks[1].text == b"=" and all(
                t.kind == "str" or t.text in (b"=", b",") for t in toks[1:]):
            return "skip"  # mysqldump from a GTID server: the source's replication state, meaningless in staging
        if toks[0].upper in ("GLOBAL", "PERSIST", "PERSIST_ONLY", "PASSWORD", "ROLE", "DEFAULT", "TRANSACTION",
                             "STATEMENT") and toks[0].kind == "word":
            raise Refuse(f"a SET {toks[0].upper} statement (only session settings may be in a dump)")
        parts, depth, cur = [], 0, []
        for t in toks:
            depth += (t.text == b"(") - (t.text == b")")
            if t.text == b"," and depth == 0:
                parts.append(cur)
                cur = []
            else:
                cur.append(t)
        parts.append(cur)
        skipped = []
        for part in parts:
            skipped.append(self._assignment(part))
        if any(skipped):
            if not all(skipped):
                raise Refuse("a SET of sql_log_bin or autocommit together with other settings")
            return "skip"
        return "session"

    def _assignment(self, part: list[Token]) -> bool:
        """Check one ``target = value``; True when the statement is to be skipped (sql_log_bin, autocommit)."""
        if not part:
            raise Refuse("a SET with an empty assignment")
        head = part[0]
        if head.kind == "word" and head.upper in ("NAMES", "CHARSET") or (
                head.upper == "CHARACTER" and len(part) > 1 and part[1].upper == "SET"):
            values = part[2:] if head.upper == "CHARACTER" else part[1:]
            if not values or not all(v.kind in ("word", "str") and self._charset_ok(v) or v.upper == "COLLATE"
                                     for v in values):
                raise Refuse("a SET NAMES with a character set other than utf8, latin1, ascii or binary")
            return False
        if head.kind == "var":
            name = head.text.decode("utf-8", "replace").lower()
            rest = part[1:]
            if name.startswith("@@"):
                name = name[2:]
                if name.startswith("global."):
                    raise Refuse("a SET of a global server variable")
                name = name.split(".", 1)[1] if name.startswith(("session.", "local.")) else name
                user = False
            else:
                user = True
                name = name[1:].strip("`'\"")
        elif head.kind == "word":
            rest, name, user = part[1:], head.upper.lower(), False
            if name in ("session", "local") and rest:
                name, rest = rest[0].upper.lower(), rest[1:]
            elif name == "global":
                raise Refuse("a SET of a global server variable")
        else:
            raise Refuse("a SET in a form dumps do not write")
        if rest[:1] and rest[0].text == b":":
            rest = rest[1:]
        if not rest or rest[0].text != b"=":
            raise Refuse("a SET in a form dumps do not write")
        value = rest[1:]
        self._value(value)
        if user:
            source = value[0].text.decode("utf-8", "replace").lower() if len(value) == 1 else ""
            if source.startswith("@@"):
                self.copies[name] = source[2:].split(".", 1)[-1]
            else:
                self.copies.pop(name, None)
            return False
        if name in SKIPPED_VARS:
            return True
        if name not in SESSION_VARS:
            shown = name if re.fullmatch(r"[a-z_]{1,64}", name) else "an unknown variable"
            raise Refuse(f"a SET of the server variable {shown} (not a setting a dump needs)")
        if name in TEXT_VARS:
            self._text_setting(name, value)
        return False

    def _value(self, value: list[Token]) -> None:
        if not value:
            raise Refuse("a SET without a value")
        for n, t in enumerate(value):
            nxt = value[n + 1].text if n + 1 < len(value) else b""
            if t.kind == "word":
                if t.upper == "SELECT" or (nxt == b"(" and t.upper not in SET_FUNCTIONS) or nxt == b".":
                    raise Refuse("a SET whose value is not a literal or a variable")
            elif t.kind == "punct" and t.text not in b"()+-," or t.kind not in ("word", "str", "var", "punct", "ident"):
                raise Refuse("a SET whose value is not a literal or a variable")

    def _text_setting(self, name: str, value: list[Token]) -> None:
        """Character sets and sql_mode decide how the next statements are read: only values this lexer reads alike."""
        if len(value) == 1 and value[0].kind == "var":
            var = value[0].text.decode("utf-8", "replace").lower()
            copied = var[2:].split(".", 1)[-1] if var.startswith("@@") else self.copies.get(var[1:].strip("`'\""))
            family = "sql_mode" if name == "sql_mode" else "charset"
            if copied and ("sql_mode" if copied == "sql_mode" else "charset") == family:
                return
            raise Refuse(f"a SET {name} from a variable that is not a saved copy of it")
        if len(value) != 1 or value[0].kind not in ("str", "word"):
            raise Refuse(f"a SET {name} whose value is not a literal")
        if name == "sql_mode":
            text = value[0].name.strip("'\"") if value[0].kind == "word" else value[0].text[1:-1].decode()
            modes = {m.strip().upper() for m in text.split(",")}
            if modes & BAD_MODES:
                raise Refuse(f"a SET sql_mode with {', '.join(sorted(modes & BAD_MODES))} (it changes how the "
                              "file's text is read)")
        elif not self._charset_ok(value[0]):
            raise Refuse(f"a SET {name} to a character set other than utf8, latin1, ascii or binary")

    @staticmethod
    def _charset_ok(tok: Token) -> bool:
        text = tok.text[1:-1].decode("utf-8", "replace") if tok.kind == "str" else tok.name
        return bool(_CHARSET_OK.fullmatch(text))
