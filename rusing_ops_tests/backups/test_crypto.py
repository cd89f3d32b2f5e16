"""Client-side encryption (age, pyrage) of real backups of the real MariaDB, in both stores; keys generated here."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import dagster as dg
import pyrage
import pytest

from rusing_ops.backups import catalog, crypto, keys
from rusing_ops.backups.defs import ASSET
from rusing_ops.backups.defs import defs as backups_defs
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.protect import Protection, protect
from rusing_ops.backups.restore import restore_backup
from rusing_ops.backups.verify import verify_backup
from rusing_ops.resources import BackupStoreResource, DatabaseResource

from .conftest import databases_like, snapshot

KNOWN = [b"zoe@example.com", b"emoji@example.com", "Zoé Tremblay".encode(), b"CREATE TABLE", b"INSERT INTO",
         b"payments", b"rusing_ops"]


@pytest.fixture(scope="module")
def age_keys():
    one, two = pyrage.x25519.Identity.generate(), pyrage.x25519.Identity.generate()
    return {"secret": str(one), "public": str(one.to_public()), "other_secret": str(two),
            "other_public": str(two.to_public())}


def _no_database_like(url, prefix: str) -> None:
    assert databases_like(url, prefix) == []


def test_encrypted_backup_reveals_nothing_and_restores_identically(every_type_db, any_store, age_keys):
    store = protect(any_store, Protection(recipients=f"{age_keys['public']}, {age_keys['other_public']}",
                                          identity=age_keys["secret"]))
    before = snapshot(every_type_db, every_type_db.database)
    # compression "none": what hides the content is the encryption, not the compression
    m = backup_database(every_type_db, store, reason="enc", compression="none").manifest
    assert m.key.endswith("-enc.sql.age") and keys.parse_key(m.key).name == m.key[: -len(".sql.age")]
    stored = any_store.get_bytes(m.key)
    assert stored.startswith(b"age-encryption.org/v1\n")
    for value in KNOWN:
        assert value not in stored, value
    assert (len(stored), hashlib.sha256(stored).hexdigest()) == (m.bytes, m.sha256)  # sha256 of the stored bytes
    assert m.encryption == {"format": "age", "recipients": [hashlib.sha256(age_keys["public"].encode()).hexdigest()[:16],
                                                            hashlib.sha256(age_keys["other_public"].encode()).hexdigest()[:16]]}
    manifest_text = any_store.get_bytes(keys.manifest_key(m.key))
    for secret in (age_keys["secret"], age_keys["public"], age_keys["secret"][16:40]):
        assert secret.encode() not in manifest_text
    entry = catalog.resolve(any_store, "latest", every_type_db.database)
    assert entry.encrypted and entry.summary()["encrypted"] == ", ".join(m.encryption["recipients"])

    copy = every_type_db.database + "__dec"
    lines: list[str] = []
    result = restore_backup(every_type_db, store, m.key, database=copy, pre_restore_backup=False,
                            from_database=every_type_db.database, log=lines.append)
    assert result.verified_against_manifest  # row counts and server checksums of every table matched
    assert snapshot(every_type_db, copy) == before  # CHECKSUM TABLE, counts and DDL of every object
    assert not any(age_keys["secret"] in line for line in lines)


def test_zstd_encrypted_backup_verifies_with_the_other_recipients_identity_file(every_type_db, local_store, age_keys,
                                                                                 tmp_path):
    identity_file = tmp_path / "identity.txt"
    identity_file.write_text(f"# created: test\n# public key: {age_keys['other_public']}\n{age_keys['other_secret']}\n")
    store = protect(local_store, Protection(recipients=f"{age_keys['public']} {age_keys['other_public']}",
                                            identity=str(identity_file)))
    m = backup_database(every_type_db, store).manifest
    assert m.key.endswith(".sql.zst.age")
    result = verify_backup(every_type_db, store, m.key)
    assert result.ok, result.problems
    assert result.tables["payments"] == {"rows_expected": 3003, "rows_found": 3003, "checksum_ok": True}


@pytest.mark.parametrize("identity", [None, "other"])
def test_restore_and_verify_without_the_right_identity_refuse_in_one_line_touching_nothing(
        every_type_db, s3_store, age_keys, identity):
    writer = protect(s3_store, Protection(recipients=age_keys["public"]))  # the nightly machine: no identity
    m = backup_database(every_type_db, writer).manifest
    reader = protect(s3_store, Protection(recipients=age_keys["public"],
                                          identity=age_keys["other_secret"] if identity else None))
    db = every_type_db.database
    with pytest.raises(crypto.IdentityProblem) as err:
        restore_backup(every_type_db, reader, m.key, database=db + "__never", pre_restore_backup=False,
                       from_database=db)
    text = str(err.value)
    first = text.splitlines()[0]
    assert "RUSING_BACKUP_IDENTITY" in first and m.key.split(".")[0] in first
    assert ("is not set" if identity is None else "does not open") in first
    assert age_keys["other_secret"] not in text and age_keys["other_secret"][20:40] not in text
    _no_database_like(every_type_db, db + "__never")  # no target created
    _no_database_like(every_type_db, db + "__never__restore")  # no staging database either
    with pytest.raises(crypto.IdentityProblem):
        verify_backup(every_type_db, reader, m.key)
    _no_database_like(every_type_db, db + "__verify")
    assert catalog.read_verification(s3_store, m.key) is None  # not recorded as a failed verification


def test_a_malformed_identity_or_recipient_is_named_and_never_shown(local_store, age_keys, tmp_path):
    with pytest.raises(Exception) as err:
        protect(local_store, Protection(recipients="age1notakey"))
    assert "RUSING_BACKUP_RECIPIENTS" in str(err.value)
    bogus = "AGE-SECRET-KEY-1" + "Q" * 58
    with pytest.raises(crypto.IdentityProblem) as err:
        crypto.parse_identities(bogus)
    assert "RUSING_BACKUP_IDENTITY" in str(err.value) and bogus not in str(err.value)
    with pytest.raises(crypto.IdentityProblem) as err:
        crypto.parse_identities(str(tmp_path / "missing.txt"))
    assert "RUSING_BACKUP_IDENTITY" in str(err.value)
    assert age_keys["secret"] not in repr(crypto.Encryption((age_keys["public"],), age_keys["secret"]))


def test_backup_job_reads_keys_through_envvar_and_records_no_secret(every_type_db, local_store, age_keys,
                                                                    dagster_instance, monkeypatch):
    monkeypatch.setenv("TEST_AGE_RECIPIENTS", age_keys["public"])
    monkeypatch.setenv("TEST_AGE_IDENTITY", age_keys["secret"])
    url = f"mysql://{every_type_db.user}@{every_type_db.host}:{every_type_db.port}/{every_type_db.database}"
    resource = BackupStoreResource(url=str(local_store.root), recipients=dg.EnvVar("TEST_AGE_RECIPIENTS"),
                                   identity=dg.EnvVar("TEST_AGE_IDENTITY"))
    defs = dg.Definitions.merge(backups_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=url), "backup_store": resource}))
    result = defs.resolve_job_def("backup_database").execute_in_process(instance=dagster_instance)
    assert result.success
    [mat] = [m for m in result.asset_materializations_for_node("newest_backup") if m.asset_key == ASSET]
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["encrypted"] == f"age, recipients {crypto.fingerprint(age_keys['public'])}"
    assert md["key"].endswith(".sql.zst.age")
    verified = defs.resolve_job_def("verify_backup").execute_in_process(instance=dagster_instance)  # uses the identity
    assert verified.success and verified.output_for_node("verify_backup_op")["ok"] is True
    everything = ""
    for run_id in (result.run_id, verified.run_id):
        records = dagster_instance.get_records_for_run(run_id).records
        everything += json.dumps([str(r.event_log_entry) for r in records])
        everything += json.dumps(dagster_instance.get_run_by_id(run_id).run_config, default=str)
    everything += json.dumps(str(md))
    assert age_keys["secret"] not in everything and age_keys["secret"][16:48] not in everything


def test_the_cli_encrypts_lists_and_refuses_without_identity(every_type_db, database_url_str, age_keys, tmp_path):
    """The operator's path: `rusing-ops db backup | backups | restore` in real processes, keys in the environment."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DATABASE_URL": database_url_str, "RUSING_BACKUP_URL": str(tmp_path / "backups"),
           "DAGSTER_HOME": str(home), "RUSING_BACKUP_RECIPIENTS": age_keys["public"]}

    def cli(*args: str, **extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "rusing_ops.cli", "db", *args], env={**env, **extra}, check=False,
                              capture_output=True, text=True, timeout=300)

    made = cli("backup", "--reason", "enc")
    assert made.returncode == 0, made.stderr
    assert "-enc.sql.zst.age: 3,015 rows" in made.stdout
    table = cli("backups").stdout.splitlines()
    assert f"age ({crypto.fingerprint(age_keys['public'])})" in table[2] and table[2].endswith("complete")
    refused = cli("restore", "--confirm", every_type_db.database)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) <= 2
    assert "RUSING_BACKUP_IDENTITY is not set" in refused.stderr
    done = cli("verify", RUSING_BACKUP_IDENTITY=age_keys["secret"])  # (verify takes no database write lock)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("verified backup-") and "6 tables match" in done.stdout
    for out in (made, refused, done):
        assert age_keys["secret"] not in out.stdout + out.stderr
