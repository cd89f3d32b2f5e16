"""The literal check of an INSERT's values (confine.py), statement by statement: what a dump writes passes, and
anything that would run a function, read a file or end in a comment is refused. No server needed: the check runs
before a statement is sent."""

from __future__ import annotations

import pytest

from rusing_ops.backups.confine import Confiner, DumpRefused, Scope


def check(values: bytes):
    return Confiner(Scope("t.sql", "stg", frozenset({"other"}), own="app")).check(7, b"INSERT INTO t VALUES " + values)


@pytest.mark.parametrize("values", [
    b"(1,'plain',NULL),(2,'two',NULL)",
    rb"(1,'it\'s','a\\b','tab\there','\\')",  # backslash escapes, an escaped backslash before the closing quote
    b"(1,'it''s','','''')",  # doubled quotes, empty strings
    b"(-1,+2.5,1e5,1.5E-3,0x1F,X'0a',x'ff',B'101',_binary'\\0',_utf8mb4'x',N'y')",
    b"(1,_cp1251 X'EFF0',_latin2 X'A3',_koi8r'x',_ucs2 X'00E9',_utf16le X'E900',_gb18030'y',_utf8mb3'z')",  # any
    # character set's introducer: how a backup writes a column of another character set
    b"(1,@rusing_ops_b3_0)",  # a value built by pieces (pieces.py)
    b"(1,'a -- b # c /* d */ SLEEP(5)')",  # comment markers and a call inside a string are text
    b"(1,'line\\\nbreak')",  # backslash-newline in a string: the server reads a newline
])
def test_literal_values_pass(values):
    assert check(values).kind == "data"


@pytest.mark.parametrize("values", [
    b"(1,SLEEP(5))",
    b"(1,LOAD_FILE('/etc/hostname'))",
    b"(1,(SELECT 1))",
    b"(1,'x')-- '",  # a comment after the values
    b"(1,'x')# '",
    b"(1,'unclosed)",
    rb"(1,'a\')",  # the quote is escaped: the string never closes
    rb"(1,\'x')",  # a backslash outside a string
    b"(1,@secret)",  # a user variable that is not one of the piece variables
    b"(1,'x' 'y' CURRENT_USER)",
    b"(1,1.e5)",  # a word after a dot (".e5"), as before
    b"(1,'a'/*x*/)",
    b"(1,_cp9999'x')",  # an introducer-shaped word that names no character set
    b"(1,_utf8mb4x'ab')",
])
def test_anything_else_is_refused_naming_the_line(values):
    with pytest.raises(DumpRefused) as err:
        check(values)
    assert "'t.sql' line 7: an INSERT whose values are not plain literals" in str(err.value)
