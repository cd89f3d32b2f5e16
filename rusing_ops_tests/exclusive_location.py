"""A tiny code location for the mutual-exclusion tests: one job that writes to the database the way every
application-database writer does (the shared tag, the pool, the GET_LOCK) and holds until told to stop."""

import os
import time

import dagster as dg
import sqlalchemy as sa

from rusing_ops.resources import DB_WRITE_POOL, DB_WRITE_TAGS, DatabaseResource


class HoldWriteConfig(dg.Config):
    label: str = "writer"
    release_file: str = ""


@dg.op(pool=DB_WRITE_POOL, description="Writes 'start', waits for its release file, writes 'end'.")
def hold_write(config: HoldWriteConfig, database: DatabaseResource):
    with database.write_lock(timeout_s=60) as conn:
        conn.execute(sa.text("INSERT INTO writes (label, phase) VALUES (:l, 'start')"), {"l": config.label})
        conn.commit()
        deadline = time.monotonic() + 60
        while config.release_file and not os.path.exists(config.release_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        conn.execute(sa.text("INSERT INTO writes (label, phase) VALUES (:l, 'end')"), {"l": config.label})
        conn.commit()


@dg.job(tags=DB_WRITE_TAGS, executor_def=dg.in_process_executor, description="Test writer holding the DB write slot.")
def exclusive_writer():
    hold_write()


defs = dg.Definitions(jobs=[exclusive_writer],
                      resources={"database": DatabaseResource(url=dg.EnvVar("DATABASE_URL"))})
