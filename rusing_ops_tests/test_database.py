"""DATABASE_URL parsing, connection errors with the password masked, ping, and the named write lock."""

import threading
import time

import pytest
import sqlalchemy as sa

from rusing_ops.core import database as dbmod
from rusing_ops.core.dburl import mask_url, parse_database_url
from rusing_ops.core.errors import ConfigError, DatabaseUnavailable, LockBusy

SECRET = "s3cr3t-Pa55"


def test_accepts_both_schemes_and_defaults():
    a = parse_database_url(f"mysql://app:{SECRET}@db.example.com:4000/rusing")
    b = parse_database_url(f"mysql+pymysql://app:{SECRET}@db.example.com:4000/rusing?ssl_verify_cert=true")
    assert (a.user, a.password, a.host, a.port, a.database) == ("app", SECRET, "db.example.com", 4000, "rusing")
    assert b.sqlalchemy_url().render_as_string(hide_password=True).startswith("mysql+pymysql://app:***@db.example.com:4000/rusing")
    assert str(a) == "mysql://app:***@db.example.com:4000/rusing" and SECRET not in repr(a)
    assert parse_database_url(None).masked() == "mysql://root@127.0.0.1:3306/rusing"
    assert parse_database_url("mysql://u:p%40ss@h/db").password == "p@ss"


@pytest.mark.parametrize(
    "url, message",
    [
        ("postgres://u:pw@h/db", "has scheme 'postgres'; expected mysql:// or mysql+pymysql://"),
        ("not a url at all", "has scheme '(none)'"),
        (f"mysql://u:{SECRET}@/db", "names no host"),
        (f"mysql://u:{SECRET}@host:3306/", "names no database"),
        (f"mysql://u:{SECRET}@host:99999/db", "is not a valid URL"),
    ],
)
def test_garbage_urls_are_refused_with_the_password_masked(url, message):
    with pytest.raises(ConfigError) as err:
        parse_database_url(url)
    text = str(err.value)
    assert message in text and SECRET not in text and "\n" not in text
    assert text.endswith("Nothing was changed.")


def test_wrong_host_gives_one_masked_line(server_url):
    url = parse_database_url(f"mysql://root:{SECRET}@127.0.0.1:1/test")
    with pytest.raises(DatabaseUnavailable) as err:
        dbmod.ping(dbmod.create_engine(url), url)
    text = str(err.value)
    assert text.startswith("Cannot connect to mysql://root:***@127.0.0.1:1/test: nothing answered at that host and port (error 2003")
    assert SECRET not in text and "\n" not in text


def test_wrong_password_gives_one_masked_line(server_url, fresh_db, db_conn):
    user = fresh_db.database[:16]
    with db_conn.cursor() as cur:
        cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'right-password'")
    try:
        url = parse_database_url(f"mysql://{user}:{SECRET}@{fresh_db.host}:{fresh_db.port}/{fresh_db.database}")
        with pytest.raises(DatabaseUnavailable) as err:
            dbmod.ping(dbmod.create_engine(url), url)
        text = str(err.value)
        assert "the server refused the user name or password (error 1045" in text
        assert SECRET not in text and "\n" not in text
    finally:
        with db_conn.cursor() as cur:
            cur.execute(f"DROP USER '{user}'@'%'")


def test_mask_url_in_free_text():
    assert mask_url(f"failed mysql+pymysql://a:{SECRET}@h:1/d and s3://k:x@b") == "failed mysql+pymysql://a:***@h:1/d and s3://k:***@b"


def test_ping_reports_server_version(fresh_db):
    result = dbmod.ping(dbmod.create_engine(fresh_db), fresh_db)
    assert result.database == fresh_db.database
    assert "MariaDB" in result.server_version and result.flavour == "mariadb"
    assert result.latency_ms >= 0


def test_named_lock_excludes_a_second_holder_and_names_it(fresh_db):
    engine = dbmod.create_engine(fresh_db)
    with dbmod.named_lock(engine, fresh_db, "rusing_test_lock", 1) as holder:
        holder_id = holder.execute(sa.text("SELECT CONNECTION_ID()")).scalar()
        with pytest.raises(LockBusy) as err:
            with dbmod.named_lock(engine, fresh_db, "rusing_test_lock", 0.2):
                pass
        assert f"is held by connection {holder_id} (" in str(err.value)
        assert err.value.data["holder"] == holder_id
    with dbmod.named_lock(engine, fresh_db, "rusing_test_lock", 0.2):  # released on exit
        pass


def test_named_lock_serialises_concurrent_writers(fresh_db, db_conn):
    """Two writers racing for the lock never interleave: each one's rows are contiguous."""
    with db_conn.cursor() as cur:
        cur.execute("CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, who VARCHAR(8))")
    engine = dbmod.create_engine(fresh_db)

    def writer(name):
        with dbmod.named_lock(engine, fresh_db, "rusing_test_writers", 10) as conn:
            for _ in range(5):
                conn.execute(sa.text("INSERT INTO log (who) VALUES (:w)"), {"w": name})
                conn.commit()
                time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db_conn.cursor() as cur:
        cur.execute("SELECT who FROM log ORDER BY id")
        order = "".join(r[0] for r in cur.fetchall())
    assert order in ("aaaaabbbbb", "bbbbbaaaaa")
