"""The backup store contract, run against a local directory and a real S3 server (SeaweedFS)."""

import hashlib
import os

import pytest

from rusing_ops.core.errors import ConfigError, NotFound, StoreError
from rusing_ops.core.store import PART_SIZE, LocalStore, S3Store, open_store


def test_put_get_list_delete_roundtrip(any_store):
    data = os.urandom(1000) + "é🎓".encode()
    assert not any_store.exists("daily/a.sql.zst")
    any_store.put_bytes("daily/a.sql.zst", data)
    any_store.put_bytes("daily/b.json", b"{}")
    any_store.put_bytes("other/c", b"c")
    assert any_store.exists("daily/a.sql.zst")
    assert any_store.get_bytes("daily/a.sql.zst") == data
    listed = any_store.list("daily/")
    assert [(o.key, o.size) for o in listed] == [("daily/a.sql.zst", len(data)), ("daily/b.json", 2)]
    assert len(any_store.list()) == 3
    any_store.delete("daily/a.sql.zst")
    assert not any_store.exists("daily/a.sql.zst")
    assert [o.key for o in any_store.list("daily/")] == ["daily/b.json"]


def test_streamed_multipart_write_is_byte_exact(any_store):
    chunk = os.urandom(1024 * 1024)
    chunks = [chunk] * (PART_SIZE // len(chunk) * 2 + 3)  # more than two parts
    written = any_store.put_stream("big.bin", iter(chunks))
    assert written == len(chunk) * len(chunks)
    digest = hashlib.sha256()
    for piece in any_store.get_stream("big.bin"):
        digest.update(piece)
    assert digest.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()


def test_abandoned_write_leaves_no_object(any_store):
    with pytest.raises(RuntimeError), any_store.open_write("half.sql.zst") as writer:
        writer.write(os.urandom(PART_SIZE + 10))  # forces an S3 multipart part
        raise RuntimeError("killed mid-upload")
    assert not any_store.exists("half.sql.zst")
    assert [o.key for o in any_store.list()] == []


def test_missing_object_and_bad_keys(any_store):
    with pytest.raises(NotFound, match="No backup object 'nope'"):
        any_store.get_bytes("nope")
    for bad in ("../etc/passwd", "/abs", "a b", ""):
        with pytest.raises(ConfigError, match="not a valid backup key"):
            any_store.put_bytes(bad, b"x")


def test_open_store_parses_urls(tmp_path, s3_server):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(f"file://{tmp_path}").root == tmp_path
    assert open_store("backups", base_dir=tmp_path).root == tmp_path / "backups"
    s3 = open_store("s3://my-bucket/prod/db")
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix) == ("my-bucket", "prod/db")
    assert s3.uri("x.sql.zst") == "s3://my-bucket/prod/db/x.sql.zst"
    with pytest.raises(ConfigError, match="scheme 'ftp' is not supported"):
        open_store("ftp://host/x")


def test_a_killed_writer_leaves_an_unfinished_upload_that_is_listed_and_discarded(any_store):
    writer = any_store.open_write("daily/killed.sql.zst")
    writer.write(os.urandom(PART_SIZE + 10))  # S3: one part uploaded, the multipart upload stays open
    writer.write(b"x")
    # no commit, no abort: what a kill -9 leaves behind
    [partial] = any_store.list_partial()
    assert partial.key == "daily/killed.sql.zst"
    assert partial.describe().startswith("unfinished upload of daily/killed.sql.zst started ")
    assert not any_store.exists("daily/killed.sql.zst")
    assert any_store.list() == []  # never listed as an object
    any_store.discard_partial(partial)
    any_store.discard_partial(partial)  # twice: already gone is fine
    assert any_store.list_partial() == []
    assert any_store.list() == []


def test_local_store_errors_name_the_store_and_the_cause(tmp_path):
    store = LocalStore(tmp_path / "backups")
    (tmp_path / "backups").mkdir()
    (tmp_path / "backups" / "x.sql.zst").mkdir()  # a directory where the object should go
    with pytest.raises(StoreError) as err:
        store.put_bytes("x.sql.zst", b"data")
    assert str(err.value).startswith(f"The backup store {store.url} could not finish x.sql.zst: ")
    assert "The unfinished file was removed; nothing was stored under that name." in str(err.value)
    assert store.list_partial() == []


def test_s3_store_unreachable_names_the_endpoint(tmp_path):
    import boto3
    from botocore.config import Config

    from rusing_ops_tests.conftest import free_port

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="AKIA-TEST-ID",
                          aws_secret_access_key="s3cr3t-do-not-show", region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}))
    store = S3Store("bucket", "prod", client=client)
    with pytest.raises(StoreError) as err:
        store.list()
    assert str(err.value).startswith(f"The backup store s3://bucket/prod could not list s3://bucket/prod: cannot "
                                     f"connect to the S3 endpoint {endpoint} (is it running?).")
    assert "(is it running?)" in str(err.value) and "Next: check that the S3 endpoint is up" in str(err.value)
    assert "s3cr3t" not in str(err.value) and "AKIA" not in str(err.value)


@pytest.mark.parametrize("size", [10, PART_SIZE + 10])  # one PUT, and a multipart upload
def test_an_exclusive_write_never_replaces_an_object_written_meanwhile(any_store, size):
    """Two backups of one database in the same second share a name: the one that commits second is discarded
    (ObjectExists), the first one's bytes stay; a plain write still replaces (manifests, sidecars)."""
    from rusing_ops.core.store import ObjectExists

    late = any_store.open_write("backup-x.sql.zst", exclusive=True)
    late.write(b"b" * size)
    with any_store.open_write("backup-x.sql.zst", exclusive=True) as first:
        first.write(b"a" * size)
    with pytest.raises(ObjectExists) as taken:
        late.commit()
    assert "already holds" in taken.value.message and "this write was discarded" in taken.value.message
    assert any_store.get_bytes("backup-x.sql.zst") == b"a" * size
    assert any_store.list_partial() == []  # the discarded write left nothing behind
    with any_store.open_write("backup-x.sql.zst") as plain:
        plain.write(b"c")
    assert any_store.get_bytes("backup-x.sql.zst") == b"c"


@pytest.mark.parametrize("size", [10, PART_SIZE + 10])  # one PUT, and a multipart upload
def test_an_exclusive_s3_write_is_refused_by_the_server_when_the_name_is_taken_after_the_check(s3_store, size,
                                                                                             monkeypatch):
    """The name taken between the existence check and the write itself (another backup committing in that round
    trip): the write carries If-None-Match, SeaweedFS refuses it, and the first object's bytes stay."""
    from rusing_ops.core.store import ObjectExists

    late = s3_store.open_write("backup-z.sql.zst", exclusive=True)
    late.write(b"b" * size)
    with s3_store.open_write("backup-z.sql.zst", exclusive=True) as first:
        first.write(b"a" * size)
    monkeypatch.setattr(s3_store, "exists_full", lambda full_key: False)  # the check ran before the first committed
    with pytest.raises(ObjectExists) as taken:
        late.commit()
    assert "this write was discarded" in taken.value.message
    assert s3_store.get_bytes("backup-z.sql.zst") == b"a" * size
    assert s3_store.list_partial() == []


def test_an_exclusive_s3_write_to_a_server_without_conditional_writes_still_stores(s3_store, monkeypatch):
    """A server answering If-None-Match with NotImplemented: the object is written without the condition (the
    existence check alone guards it), not refused."""
    calls = []
    real = s3_store.client.put_object

    def no_conditions(**kwargs):
        calls.append("IfNoneMatch" in kwargs)
        if "IfNoneMatch" in kwargs:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "A header you provided implies "
                                         "functionality that is not implemented"}}, "PutObject")
        return real(**kwargs)

    monkeypatch.setattr(s3_store.client, "put_object", no_conditions)
    with s3_store.open_write("backup-w.sql.zst", exclusive=True) as writer:
        writer.write(b"w")
    assert calls == [True, False] and s3_store.get_bytes("backup-w.sql.zst") == b"w"


def test_an_exclusive_local_write_on_a_file_system_without_hard_links(local_store, monkeypatch):
    """Where os.link is not supported (EPERM: some network and FUSE file systems), the exclusive commit checks the
    name and renames: a taken name is still refused, a free one still stored, and no temp file is left either way."""
    import errno

    from rusing_ops.core.store import ObjectExists

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    with local_store.open_write("backup-y.sql.zst", exclusive=True) as first:
        first.write(b"first")
    with pytest.raises(ObjectExists), local_store.open_write("backup-y.sql.zst", exclusive=True) as second:
        second.write(b"second")
    assert local_store.get_bytes("backup-y.sql.zst") == b"first"
    assert local_store.list_partial() == [] and [o.key for o in local_store.list()] == ["backup-y.sql.zst"]
