"""The compression level of a backup (issue 15): zstd 1 by default (half the CPU of 3), any level 1-19 (gzip 1-9)
on request from the library, the job's config and `rusing-ops db backup --level`; a level out of range is refused
before anything is written. Every level restores the same values."""

from __future__ import annotations

import pytest
import zstandard
from pydantic import ValidationError

from rusing_ops.backups import streams
from rusing_ops.backups.defs import BackupDatabaseConfig
from rusing_ops.backups.dump import backup_database
from rusing_ops.backups.restore import restore_backup
from rusing_ops.core.errors import ConfigError

from .conftest import query, snapshot

PROSE = ("Le coaching individuel aide chaque apprenant à progresser à son rythme; the learning path combines "
         "courses, quizzes and live sessions with a certified coach. ")


def test_levels_trade_cpu_for_size_and_restore_the_same_values(fresh_db, local_store, server_url):
    query(fresh_db, fresh_db.database, "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT) DEFAULT CHARSET=utf8mb4")
    query(fresh_db, fresh_db.database,
          "INSERT INTO notes SELECT seq, CONCAT(seq, ' ', SUBSTRING(REPEAT(%s, 3), 1 + seq %% 97, 600)) "
          "FROM seq_1_to_3000", (PROSE,))
    fast = backup_database(fresh_db, local_store, reason="fast").manifest
    small = backup_database(fresh_db, local_store, reason="small", level=19).manifest
    fast_bytes, small_bytes = local_store.get_bytes(fast.key), local_store.get_bytes(small.key)
    plain = zstandard.ZstdDecompressor().stream_reader(fast_bytes).read()
    assert zstandard.ZstdDecompressor().stream_reader(small_bytes).read().split(b"\n", 1)[1] == plain.split(b"\n", 1)[1]
    # The level reached the compressor: a streamed zstd frame's window is the level's (1: 512 KiB, 19: 8 MiB).
    assert streams.ZSTD_LEVEL == 1
    assert zstandard.get_frame_parameters(fast_bytes).window_size == 1 << 19
    assert zstandard.get_frame_parameters(small_bytes).window_size == 1 << 23
    before = snapshot(server_url, fresh_db.database)
    restore_backup(fresh_db, local_store, small.key, pre_restore_backup=False)
    assert snapshot(server_url, fresh_db.database) == before
    gz = backup_database(fresh_db, local_store, reason="gz", compression="gzip", level=9).manifest
    assert gz.key.endswith(".sql.gz") and gz.tables["notes"].rows == 3000
    assert local_store.get_bytes(gz.key)[8] == 2  # gzip's XFL: 2 = the slowest, best compression (level 9)


@pytest.mark.parametrize(("compression", "level"), [("zstd", 0), ("zstd", 20), ("gzip", 10)])
def test_a_level_out_of_range_is_refused_before_anything_is_written(fresh_db, local_store, compression, level):
    with pytest.raises(ConfigError) as refused:
        backup_database(fresh_db, local_store, compression=compression, level=level)
    assert f"Compression level {level} is not one of {compression}'s" in refused.value.message
    assert "no backup was written" in str(refused.value)
    assert list(local_store.list("")) == []


def test_the_jobs_config_takes_a_level_and_refuses_one_out_of_range():
    assert BackupDatabaseConfig().level is None
    assert BackupDatabaseConfig(level=3).level == 3
    with pytest.raises(ValidationError):
        BackupDatabaseConfig(level=20)
