"""The repository's dagster.yaml, loaded as the instance loads it: crashed run workers are retried, failed ops are
not (they have their own RetryPolicy where a retry is safe), and the freshness daemon is on."""

import shutil

import dagster as dg

from rusing_ops.settings import PROJECT_ROOT


def test_run_retries_retry_crashes_only(tmp_path, monkeypatch):
    shutil.copy(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.get() as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.get_settings("freshness") == {"enabled": True}
