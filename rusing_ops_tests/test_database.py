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
    odd = parse_database_url("mysql://u%40x%2525:p%40ss%2525@h/db")  # percent-decoded exactly once
    assert (odd.user, odd.password) == ("u@x%25", "p@ss%25")


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
        with pytest.raises(LockBusy) as err, dbmod.named_lock(engine, fresh_db, "rusing_test_lock", 0.2):
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


# ------------------------------------------------------------------------------------------------ URL options, TLS


@pytest.mark.parametrize("url", [
    f"mysql:/root:{SECRET}@db.example.com/rusing",
    f"mysql//root:{SECRET}@db.example.com/rusing",
    f"root:{SECRET}@db.example.com/rusing",
    f"mysql:root:{SECRET}@db.example.com/rusing",
    f"mysql://root:{SECRET}@db.example.com/rusing?password={SECRET}",
    f"mysql://root:{SECRET[:4]}@{SECRET[4:]}@db.example.com/rusing",
    f"mysql://root:{SECRET}@db.example.com:4000/rusing?ssl_mode=SOMETIMES",
    f"mysql://root:{SECRET}@db.example.com:4000/rusing?sslmode=require",
    f"mysql://root:{SECRET}@db.example.com:4000/rusing?ssl_ca=/a&ssl_ca=/b",
])
def test_malformed_urls_never_show_the_password(url):
    with pytest.raises(ConfigError) as err:
        parse_database_url(url)
    text = str(err.value)
    assert SECRET not in text and SECRET[:4] + "@" not in text and SECRET[4:] not in text.replace("db.example", "")
    assert "\n" not in text and text.endswith("Nothing was changed.")
    assert SECRET not in mask_url(f"DATABASE_URL={url} failed")




def test_health_with_a_malformed_url_keeps_the_password_out_of_console_and_run_storage(tmp_path, monkeypatch, capsys,
                                                                                      fresh_definitions):
    """Issue 8 item 7: a DATABASE_URL without `://` put its password on the console, in the run storage, the
    compute logs and the asset check's description."""
    from rusing_ops import cli

    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for url in (f"mysql:/root:{SECRET}@127.0.0.1:3306/test", f"root:{SECRET}@127.0.0.1:3306/test"):
        monkeypatch.setenv("DATABASE_URL", url)
        code = cli.main(["health"])
        out = capsys.readouterr()
        assert code == 1 and "DATABASE_URL" in out.out + out.err
        assert SECRET not in out.out + out.err
    stored = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in stored)
    assert [str(p) for p in stored if SECRET.encode() in p.read_bytes()] == []


def test_every_option_reaches_the_pymysql_arguments(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    url = parse_database_url(f"mysql://u:{SECRET}@db.example.com:4000/app?ssl_ca={ca}&charset=utf8mb3"
                             "&connect_timeout=3.5&ssl_verify_identity=false")
    kwargs = url.pymysql_kwargs()
    assert kwargs == {"host": "db.example.com", "port": 4000, "user": "u", "password": SECRET, "database": "app",
                      "charset": "utf8mb3", "connect_timeout": 3.5, "ssl_ca": str(ca), "ssl_verify_cert": True,
                      "ssl_verify_identity": False}
    assert url.with_database("other").pymysql_kwargs()["ssl_ca"] == str(ca)  # the query survives with_database
    assert url.pymysql_kwargs(database="")["database"] is None
    engine = dbmod.create_engine(url)
    assert engine.url.render_as_string(hide_password=True) == "mysql+pymysql://u:***@db.example.com:4000/app"
    engine.dispose()


@pytest.mark.parametrize("query, mode", [
    ("", "VERIFY_IDENTITY"),
    ("ssl_verify_cert=true&ssl_verify_identity=true", "VERIFY_IDENTITY"),
    ("ssl_verify_identity=false", "VERIFY_CA"),
    ("ssl_verify_cert=false", "REQUIRED"),
    ("ssl_mode=required", "REQUIRED"),
    ("ssl_mode=DISABLED", "DISABLED"),
    ('ssl={"rejectUnauthorized":true}', "VERIFY_IDENTITY"),
])
def test_tls_mode_off_loopback(query, mode):
    url = parse_database_url("mysql://u@gateway01.us-east-1.prod.aws.tidbcloud.com:4000/app" + ("?" + query if query else ""))
    assert url.tls.mode == mode
    kwargs = url.pymysql_kwargs()
    if mode == "DISABLED":
        assert kwargs["ssl_disabled"] is True
    else:  # any ssl_* argument makes PyMySQL 1.2 refuse a server without TLS before it logs in
        assert kwargs["ssl_ca"] and kwargs["ssl_verify_cert"] is (mode != "REQUIRED")
        assert kwargs["ssl_verify_identity"] is (mode == "VERIFY_IDENTITY")


@pytest.mark.parametrize("host, mode", [("127.0.0.1", "PREFERRED"), ("localhost", "PREFERRED"), ("[::1]", "PREFERRED"),
                                        ("10.0.0.5", "VERIFY_IDENTITY"), ("[2001:db8::7]", "VERIFY_IDENTITY")])
def test_loopback_prefers_and_everything_else_verifies(host, mode):
    url = parse_database_url(f"mysql://u:{SECRET}@{host}:4000/app")
    assert url.tls.mode == mode
    assert url.masked() == f"mysql://u:***@{host}:4000/app" and SECRET not in repr(url)


@pytest.mark.parametrize("query, message", [
    ("ssl_mode=PREFERRED&ssl_ca=/x.pem", "ssl_mode=PREFERRED verifies nothing"),
    ("ssl_mode=VERIFY_IDENTITY&ssl_verify_identity=false", "keep one of them"),
    ("ssl_mode=DISABLED&ssl_verify_cert=true", "ssl_mode=DISABLED with TLS options"),
    ("ssl_verify_cert=false&ssl_verify_identity=true", "keep one"),
    ("ssl_cert=/c.pem", "ssl_cert and ssl_key go together"),
    ("ssl_verify_cert=maybe", "is not true or false"),
    ("connect_timeout=0", "connect_timeout='0' is not a number of seconds"),
    ("charset=utf8;drop", "is not a character set name"),
    ("ssl_mode=REQUIRED&ssl_mode=DISABLED", "is given twice"),
    ("ssl=true", "ssl='true' is not understood"),
])
def test_contradictory_or_unknown_options_are_refused_not_guessed(query, message):
    with pytest.raises(ConfigError) as err:
        parse_database_url(f"mysql://u:{SECRET}@db.example.com/app?{query}")
    assert message in str(err.value) and SECRET not in str(err.value)


def test_a_missing_ca_file_is_named_before_connecting():
    url = parse_database_url("mysql://u@db.example.com/app?ssl_ca=/nonexistent/ca.pem")
    with pytest.raises(ConfigError) as err:
        dbmod.raw_connect(url)
    assert "ssl_ca file '/nonexistent/ca.pem' does not exist" in str(err.value)


def test_the_write_lock_is_per_database(server_url):
    """Two databases on one server never wait for each other's writers; the same database does."""
    from rusing_ops.core.database import DB_WRITE_LOCK, create_engine, named_lock, scoped_lock_name
    from rusing_ops.core.errors import LockBusy

    a, b = server_url.with_database("lock_a"), server_url.with_database("lock_b")
    ea, eb = create_engine(a.with_database(""), pool_size=1), create_engine(b.with_database(""), pool_size=1)
    try:
        with named_lock(ea, a, DB_WRITE_LOCK, 1):
            with named_lock(eb, b, DB_WRITE_LOCK, 0.2):  # another database: free
                pass
            with pytest.raises(LockBusy, match=r"'rusing_ops\.app_db_write\.lock_a'"), \
                    named_lock(eb, a, DB_WRITE_LOCK, 0.2):  # the same database: held
                pass
    finally:
        ea.dispose()
        eb.dispose()
    long = scoped_lock_name(DB_WRITE_LOCK, "d" * 64)
    assert len(long) == 64 and long != scoped_lock_name(DB_WRITE_LOCK, "d" * 63 + "e")
