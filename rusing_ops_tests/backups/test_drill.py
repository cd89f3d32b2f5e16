"""Restore drills over real backups of the real MariaDB (library and Dagster asset with its RTO / RPO checks), the
immutability canary as an asset check, and the retention schedule's dry-run default."""

from __future__ import annotations

import datetime as dt
import random

import dagster as dg
import pytest

from rusing_ops.backups import catalog
from rusing_ops.backups.defs import defs as backups_defs
from rusing_ops.backups.drill import DrillResult, judge, pick_backup, run_drill
from rusing_ops.backups.drill_defs import (
    RPO_CHECK,
    RTO_CHECK,
    retention_run_config,
    retention_schedule,
)
from rusing_ops.backups.drill_defs import defs as drill_defs
from rusing_ops.backups.dump import backup_database
from rusing_ops.core.errors import ConfigError, NotFound
from rusing_ops.resources import BackupStoreResource, DatabaseResource

from .conftest import databases_like


def _url(db) -> str:
    return f"mysql://{db.user}@{db.host}:{db.port}/{db.database}"


def _defs(db, store_url: str) -> dg.Definitions:
    return dg.Definitions.merge(backups_defs, drill_defs, dg.Definitions(resources={
        "database": DatabaseResource(url=_url(db)), "backup_store": BackupStoreResource(url=store_url)}))


def test_a_drill_restores_a_real_backup_and_measures_rto_and_rpo(every_type_db, local_store):
    old = backup_database(every_type_db, local_store, reason="nightly",
                          now=dt.datetime.now(dt.UTC) - dt.timedelta(days=30)).manifest
    new = backup_database(every_type_db, local_store, reason="nightly").manifest
    lines: list[str] = []
    result = run_drill(every_type_db, local_store, log=lines.append)
    assert result.ok and result.key == new.key and result.picked_by == "latest"
    assert result.rows == new.total_rows == 3015 and result.bytes == new.bytes
    assert result.restore_s > 0 and result.mb_per_s == round(new.uncompressed_bytes / 1e6 / result.restore_s, 3)
    assert result.newest_verified == catalog.resolve(local_store, new.key).name and 0 <= result.rpo_hours < 1
    assert catalog.read_verification(local_store, new.key)["ok"] is True  # the drill verified it
    assert databases_like(every_type_db, every_type_db.database + "__verify") == []  # scratch dropped
    assert any(line.startswith(f"restore drill of {result.backup}: OK in ") for line in lines)

    picks = {pick_backup(local_store, every_type_db.database, "random:60", rng=random.Random(seed)).key
             for seed in range(12)}
    assert picks == {old.key, new.key}  # both are candidates within 60 days
    assert {pick_backup(local_store, every_type_db.database, "random:7", rng=random.Random(s)).key
            for s in range(6)} == {new.key}
    with pytest.raises(ConfigError):
        pick_backup(local_store, every_type_db.database, "sometimes")


def test_a_drill_with_nothing_to_restore_says_so(fresh_db, local_store):
    with pytest.raises(NotFound) as err:
        run_drill(fresh_db, local_store)
    assert "nothing to drill" in str(err.value)


def test_the_drill_asset_records_rto_rpo_and_its_checks_fail_when_a_target_is_missed(every_type_db, local_store,
                                                                                      dagster_instance):
    backup_database(every_type_db, local_store, reason="nightly")
    job = _defs(every_type_db, str(local_store.root)).resolve_job_def("run_restore_drill")
    met = job.execute_in_process(instance=dagster_instance, run_config={"ops": {"restore_drill": {"config": {
        "rto_target_s": 3600, "rpo_target_h": 26}}}})
    assert met.success
    missed = job.execute_in_process(instance=dagster_instance, raise_on_error=False, run_config={"ops": {
        "restore_drill": {"config": {"rto_target_s": 0, "rpo_target_h": 0}}}})
    assert not missed.success  # blocking ERROR checks: the run fails, so alert_on_run_failure alerts

    records = dagster_instance.fetch_materializations(dg.AssetKey("restore_drill"), limit=10).records
    assert len(records) == 2  # both drills plotted, the missed one too
    for rec in records:
        md = {k: v.value for k, v in rec.asset_materialization.metadata.items()}
        assert md["ok"] is True and md["restore_s"] > 0 and md["mb_per_s"] > 0 and 0 <= md["rpo_hours"] < 1
        assert md["dagster/row_count"] == 3015 and md["backup"].startswith("backup-")
    evaluations = {}
    for result, run in ((met, "met"), (missed, "missed")):
        for event in result.get_asset_check_evaluations():
            evaluations[(run, event.check_name)] = event
    assert all(evaluations[("met", c)].passed for c in (RTO_CHECK, RPO_CHECK))
    for check in (RTO_CHECK, RPO_CHECK):
        failed = evaluations[("missed", check)]
        assert not failed.passed and failed.severity == dg.AssetCheckSeverity.ERROR
    assert "(target 0s)" in evaluations[("missed", RTO_CHECK)].description


def test_the_immutability_canary_on_a_local_folder_warns_not_immutable(every_type_db, local_store, dagster_instance):
    job = _defs(every_type_db, str(local_store.root)).resolve_job_def("check_backup_store_immutable")
    result = job.execute_in_process(instance=dagster_instance, raise_on_error=False)
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.check_name == "backup_store_immutable" and not evaluation.passed
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.description.startswith("not immutable: ") and "local folder" in evaluation.description


def test_retention_runs_daily_as_a_dry_run_unless_enabled(monkeypatch):
    assert retention_run_config()["ops"]["prune_backups_op"]["config"]["dry_run"] is True
    monkeypatch.setenv("RUSING_RETENTION_APPLY", "true")
    assert retention_run_config()["ops"]["prune_backups_op"]["config"]["dry_run"] is False
    context = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC))
    [request] = list(retention_schedule.evaluate_tick(context).run_requests)
    assert request.run_config["ops"]["prune_backups_op"]["config"]["dry_run"] is False
    assert retention_schedule.cron_schedule == "30 4 * * *" and retention_schedule.job_name == "prune_backups"


def test_a_drill_is_judged_against_its_targets():
    """drill.judge: RTO met only by a backup that matched its manifest within the target; RPO only by a verified
    backup young enough; each with the sentence the UI shows."""
    def result(**changes) -> DrillResult:
        base = {"backup": "backup-app-2026-12-01T050000Z-nightly", "key": "k", "picked_by": "latest",
                "taken_at": "t", "ok": True, "restore_s": 12.34, "mb_per_s": 10.0, "rows": 5, "bytes": 100,
                "scratch_db": "s", "rpo_hours": 3.25, "newest_verified": "backup-app-2026-12-01T020000Z-nightly"}
        return DrillResult(**{**base, **changes})

    rto, rpo = judge(result(), rto_target_s=60, rpo_target_h=26)
    assert (rto.passed, rpo.passed) == (True, True)
    assert rto.description == "backup-app-2026-12-01T050000Z-nightly restored and matched its manifest in 12.3s " \
                              "(target 60s)"
    assert rpo.description == "newest verified backup backup-app-2026-12-01T020000Z-nightly is 3.2 h old (target 26 h)"
    assert [t.passed for t in judge(result(), rto_target_s=12.3, rpo_target_h=3.2)] == [False, False]
    assert [t.passed for t in judge(result(), rto_target_s=12.34, rpo_target_h=3.25)] == [True, True]  # at the target
    bad, none = judge(result(ok=False, problems=["users: 2 rows, manifest 3"], rpo_hours=None, newest_verified=None),
                      rto_target_s=1e9, rpo_target_h=1e9)
    assert not bad.passed and bad.description.endswith("did NOT match its manifest: users: 2 rows, manifest 3")
    assert (none.passed, none.description) == (False, "no backup is verified")
