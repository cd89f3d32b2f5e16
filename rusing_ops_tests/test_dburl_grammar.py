"""core/dburl.py parses DATABASE_URL with a copy of SQLAlchemy 2.0's URL grammar (so that a backup process never
imports SQLAlchemy): the parts it finds must be the ones SQLAlchemy's own ``make_url`` finds, and a URL either
refuses must be refused by both."""

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rusing_ops.core.dburl import parse_database_url
from rusing_ops.core.errors import ConfigError

ACCEPTED = [
    "mysql://root@127.0.0.1:3306/rusing",
    "mysql+pymysql://app:s3cret@db.example.com/app_db",
    "mysql://app:p%40ss%2Fw%3Ard@host:4000/rel-dash",
    "mysql://app:pa/ss@host/db",
    "mysql://app:pa:ss@host/db",
    "mysql://us%20er:pw@host/db?ssl_mode=VERIFY_IDENTITY&connect_timeout=5",
    "mysql://app@[::1]:3307/db",
    "mysql://app:@host/db",
    "mysql://host/db",
    "mysql://app:pw@gateway01.us-west-2.prod.aws.tidbcloud.com:4000/test?ssl_mode=VERIFY_IDENTITY",
]


@pytest.mark.parametrize("raw", ACCEPTED)
def test_parts_are_the_ones_sqlalchemy_finds(raw):
    ours, theirs = parse_database_url(raw), make_url(raw)
    assert ours.host == theirs.host
    assert ours.port == (theirs.port or 3306)
    assert ours.database == theirs.database
    assert ours.user == (theirs.username or "root")
    assert ours.password == (theirs.password or "")


@pytest.mark.parametrize("raw", ["mysql://app:pw@host:notaport/db", "mysql://app:pw@host:99999/db",
                                 "mysql://app:p@ss@host/db", "mysql://app:pw@host", "mysql://app:pw@/db"])
def test_what_sqlalchemy_cannot_use_is_refused_without_the_password(raw):
    with pytest.raises(ConfigError) as refused:
        parse_database_url(raw)
    assert "pw" not in str(refused.value).replace("password", "") and "p@ss" not in str(refused.value)
    try:
        theirs = make_url(raw)
    except (ArgumentError, ValueError):
        return  # refused by both
    assert not (theirs.host and theirs.database and "@" not in theirs.host and 0 < (theirs.port or 3306) < 65536)


def test_a_database_name_with_other_characters_is_refused_saying_which_are_taken():
    for name in ("odd%20db", "caf%C3%A9", "a.b", "x" * 65):
        with pytest.raises(ConfigError) as err:
            parse_database_url(f"mysql://root:s3cr3t@127.0.0.1:3306/{name}")
        assert "(letters, digits, _, $ and -, at most 64)" in err.value.message and "s3cr3t" not in str(err.value)
    assert parse_database_url("mysql://root@127.0.0.1:3306/odd-db$1_x").database == "odd-db$1_x"
