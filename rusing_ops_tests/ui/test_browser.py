"""An operator's first session in the Dagster UI, in a real browser (issue 11): Debian's Chromium driven by Selenium
through /usr/bin/chromedriver against `dagster-webserver` on a free port, a temporary DAGSTER_HOME and a fresh
MariaDB database. Back up with one click, find the backup as a partition with its metadata, restore it by picking
it, and see a mistyped confirm refused in words.

Screenshots go to a temporary folder; `RUSING_SCREENSHOTS=1` writes them to docs/screenshots/ (README shows them).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from rusing_ops_tests.conftest import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.skipif(not Path(CHROMEDRIVER).exists() or shutil.which("chromium") is None,
                                reason="needs Debian's chromium and chromium-driver: "
                                "apt-get install -y chromium chromium-driver")

# The webserver launches runs itself (no daemon needed for a UI test; the queue is tested in test_mutual_exclusion).
INSTANCE_YAML = """telemetry:
  enabled: false
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
"""


def wait_until(what: str, probe, timeout: float = 40.0, every: float = 0.3):
    """``probe()``'s first truthy value; fails naming ``what`` after ``timeout`` seconds (a wait, not a timing assert)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(every)


class Webserver:
    def __init__(self, base: str, proc: subprocess.Popen, home: Path):
        self.base, self.proc, self.home = base, proc, home

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(self.base + "/graphql", json.dumps({"query": query, "variables": variables or {}})
                                         .encode(), {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["data"]

    def runs(self) -> list[dict]:
        return self.graphql("{ runsOrError { ... on Runs { results { runId status jobName tags { key value } } } } }")[
            "runsOrError"]["results"]

    def finished_run(self, job: str, count: int) -> dict:
        """The newest run of ``job`` once ``count`` of its runs have finished."""
        def probe():
            done = [r for r in self.runs() if r["jobName"] == job and r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
            return done[0] if len(done) >= count else None

        return wait_until(f"{count} finished run(s) of {job}", probe, timeout=60)

    def partition_keys(self) -> list[str]:
        return self.graphql('{ assetNodeOrError(assetKey: {path: ["database_backup"]}) { ... on AssetNode { '
                            'partitionKeys } } }')["assetNodeOrError"]["partitionKeys"]

    def alerts_for(self, run_id: str) -> list[str]:
        """What alert_on_run_failure posts for the failed run (evaluated here on the webserver's instance, as the
        daemon would): the bodies a webhook received."""
        import dagster as dg

        from rusing_ops.alerting.defs import alert_on_run_failure
        from rusing_ops.resources import AlertResource
        from rusing_ops_tests.conftest import JsonServer

        receiver = JsonServer(lambda method, path, headers, body: (200, {"ok": True}))
        try:
            with dg.DagsterInstance.from_config(str(self.home)) as instance:
                run = instance.get_run_by_id(run_id)
                [record] = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
                context = dg.build_run_status_sensor_context(
                    sensor_name="alert_on_run_failure", dagster_instance=instance, dagster_run=run,
                    dagster_event=record.event_log_entry.dagster_event,
                    resources={"alerts": AlertResource(webhook_url=receiver.base_url + "/hook")}).for_run_failure()
                alert_on_run_failure(context)
            return [body for _, _, _, body in receiver.calls]
        finally:
            receiver.close()

    def failure_of(self, run_id: str) -> str:
        """The run's step failure messages (for an assertion's text)."""
        events = self.graphql("query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events { "
                              "... on ExecutionStepFailureEvent { error { message } } } } } }", {"id": run_id})
        return " | ".join(e["error"]["message"] for e in events["logsForRun"]["events"] if e.get("error"))


@pytest.fixture
def webserver(database_url_str, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUSING_", "DRIZZLE_", "STRIPE_", "APP_", "SLACK_"))}
    env.update(DAGSTER_HOME=str(home), DATABASE_URL=database_url_str, RUSING_BACKUP_URL=str(tmp_path / "backups"))
    log = open(tmp_path / "webserver.log", "wb")  # noqa: SIM115 - closed after the process below
    proc = subprocess.Popen([str(ROOT / ".venv/bin/dagster-webserver"), "-w", str(ROOT / "workspace.yaml"),
                             "-h", "127.0.0.1", "-p", str(port)], cwd=tmp_path, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=60, proc=proc)
        server = Webserver(f"http://127.0.0.1:{port}", proc, home)
        status = wait_until("the code location to load", lambda: server.graphql(
            "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus locationOrLoadError { "
            "__typename ... on PythonError { message } } } } } }")["workspaceOrError"]["locationEntries"][0]
            if server.graphql("{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }")[
                "workspaceOrError"]["locationEntries"][0]["loadStatus"] == "LOADED" else None)
        assert status["locationOrLoadError"]["__typename"] == "RepositoryLocation", status
        server.graphql("mutation { setNuxSeen }")  # the first-visit "join the community" dialog
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)  # no Selenium Manager download
    yield driver
    driver.quit()


@pytest.fixture
def shots(tmp_path):
    folder = ROOT / "docs" / "screenshots" if os.environ.get("RUSING_SCREENSHOTS") == "1" else tmp_path / "shots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_operator_backs_up_finds_and_restores_from_the_ui(webserver, browser, shots, db_conn, fresh_db):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    with db_conn.cursor() as cur:
        cur.execute("CREATE TABLE courses (id INT PRIMARY KEY, title VARCHAR(40))")
        cur.execute("INSERT INTO courses VALUES (1, 'Russian A1'), (2, 'Russian B2')")
        cur.execute("CREATE TABLE enrollments (id INT PRIMARY KEY AUTO_INCREMENT, course_id INT)")
        cur.execute("INSERT INTO enrollments (course_id) VALUES (1), (1), (2)")
    wait = WebDriverWait(browser, 40, ignored_exceptions=[StaleElementReferenceException])

    def click(xpath: str):
        wait.until(EC.element_to_be_clickable((By.XPATH, xpath))).click()

    def page_text() -> str:
        return browser.find_element(By.TAG_NAME, "body").text

    def picked() -> str | None:
        """The Launchpad's Partition box (re-rendered while partitions load: read again until it holds)."""
        try:
            return browser.find_element(By.CSS_SELECTOR, "input[placeholder='Partition']").get_attribute("value")
        except StaleElementReferenceException:
            return None

    # 1. One click: Materialize on newest_backup. No partition to add, no name to type.
    browser.get(webserver.base + "/assets/newest_backup")
    click("//button[normalize-space(.)='Materialize']")
    run = webserver.finished_run("__ASSET_JOB", 1)
    assert run["status"] == "SUCCESS"
    browser.refresh()
    wait_until("the materialization on the asset page", lambda: "Latest materialization" in page_text()
               and "Never materialized" not in page_text())
    browser.save_screenshot(str(shots / "01-one-click-backup.png"))

    # 2. The backup is a partition of database_backup, named by the clock, with its metadata.
    [name] = webserver.graphql('{ assetNodeOrError(assetKey: {path: ["database_backup"]}) { ... on AssetNode { '
                               'partitionKeys } } }')["assetNodeOrError"]["partitionKeys"]
    assert name.startswith("backup-") and name.endswith("-manual")
    browser.get(webserver.base + f"/assets/database_backup?view=partitions&partition={name}")
    text = wait_until("the partition's metadata", lambda: page_text() if "migration_head" in page_text() else None)
    assert name + ".sql.zst" in text and "dagster/row_count\n5" in text and "reason\nmanual" in text
    assert "enrollments 3" in text and "courses 2" in text  # the per-table rows, as a table
    browser.save_screenshot(str(shots / "02-backup-partition.png"))

    # 3. Restore by picking that partition; the target database is named above the config. A wrong confirm first.
    with db_conn.cursor() as cur:
        cur.execute("DELETE FROM enrollments")

    def launch_restore(confirm: str, screenshot: str | None = None):
        browser.get(webserver.base + "/locations/rusing_ops/jobs/restore_database/playground")
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".CodeMirror")))
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "input[placeholder='Partition']"))).click()
        click(f"//*[normalize-space(text())='{name}']")
        wait_until("the picked partition", lambda: f"partition: {name}" in page_text() or picked() == name)
        assert f"target-database: {fresh_db.database} on {fresh_db.host}:{fresh_db.port}" in page_text()
        browser.execute_script("document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])",
                               f"ops:\n  restore_database_op:\n    config:\n      confirm: {confirm}\n")
        wait_until("the config to validate", lambda: "Missing required config" not in page_text())
        if screenshot:
            ActionChains(browser).move_to_element(browser.find_element(By.CSS_SELECTOR, ".CodeMirror")).perform()
            browser.save_screenshot(str(shots / screenshot))
        click("//button[normalize-space(.)='Launch Run']")

    launch_restore("production", "03-restore-launchpad.png")
    refused = webserver.finished_run("restore_database", 1)
    assert refused["status"] == "FAILURE"
    paragraph = (f"confirm 'production' does not match the target database '{fresh_db.database}'; nothing was "
                 "restored. Nothing was changed.")
    wait_until("the refusal on the run page", lambda: paragraph in page_text())
    browser.get(browser.current_url.split("?")[0] + "?logs=type%3ASTEP_FAILURE")  # the run page, failure event only
    wait_until("the step failure", lambda: "STEP_FAILURE" in page_text() and paragraph in page_text())
    folded = browser.find_elements(By.XPATH, "//*[normalize-space(.)='View full message']")
    if folded:  # a long message is folded: unfold it, so nothing under the paragraph goes unseen
        folded[0].click()
        wait_until("the whole failure message", lambda: "Close" in page_text())
    text = page_text()
    assert paragraph in text and f"set confirm to '{fresh_db.database}'" in text
    assert "Stack Trace" not in text and 'File "' not in text and "dagster._core" not in text, text[-2000:]
    browser.save_screenshot(str(shots / "04-confirm-refused.png"))
    assert webserver.alerts_for(refused["runId"]) == []  # an operator's refusal is not an incident
    with db_conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM enrollments")
        assert cur.fetchone()[0] == 0  # the refusal touched nothing
    assert webserver.partition_keys() == [name]  # and took no pre-restore backup

    launch_restore(fresh_db.database)
    restored = webserver.finished_run("restore_database", 2)
    assert restored["status"] == "SUCCESS", webserver.failure_of(restored["runId"])
    assert {t["key"]: t["value"] for t in restored["tags"]}["dagster/partition"] == name
    wait_until("the successful run page", lambda: "RUN_SUCCESS" in page_text())
    browser.get(browser.current_url.split("?")[0] + "?logs=type%3AASSET_MATERIALIZATION")
    wait_until("the pre-restore backup recorded as a partition", lambda: "pre-restore" in page_text())
    browser.save_screenshot(str(shots / "05-restored.png"))
    with db_conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM enrollments")
        assert cur.fetchone()[0] == 3

    # 4. Verify that backup from its check: backup_verified's description links to verify_backup's Launchpad.
    browser.get(webserver.base + "/assets/database_backup?view=checks&checkDetail=backup_verified")
    click("//a[normalize-space(.)='open verify_backup']")
    wait_until("verify_backup's Launchpad", lambda: "/jobs/verify_backup/playground" in browser.current_url)
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "input[placeholder='Partition']"))).click()
    click(f"//*[normalize-space(text())='{name}']")
    wait_until("the picked partition", lambda: picked() == name)
    click("//button[normalize-space(.)='Launch Run']")
    verified = webserver.finished_run("verify_backup", 1)
    assert verified["status"] == "SUCCESS", webserver.failure_of(verified["runId"])
    browser.get(webserver.base + "/assets/database_backup?view=checks&checkDetail=backup_verified")
    text = wait_until("backup_verified's latest execution", lambda: page_text() if "Latest execution" in page_text()
                      and "Evaluation result" in page_text() else None)
    assert re.search(r"Latest execution\s+restored and matched the manifest .*\s+Evaluation result\s+Passed", text), text
    assert f"Partition\n{name}" in text
    browser.save_screenshot(str(shots / "06-verified-from-the-check.png"))

    # 5. "Add a partition" (Dagster offers it on every dynamic partition set: here Materialize ▾ -> Report
    #    materialization events) takes no backup: a restore of the typed name is refused in words, nothing changes.
    browser.get(webserver.base + "/assets/database_backup?view=partitions")
    click("//button[normalize-space(.)='Materialize']/following::button[1]")  # its drop-down
    click("//*[normalize-space(text())='Report materialization events']")
    click("//div[contains(@class,'bp5-dialog')]//*[normalize-space(text())='Add a partition']")
    typed = "backup-2026-12-24T000000Z-manual"
    wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "input[placeholder='name']"))).send_keys(typed)
    click("//button[normalize-space(.)='Save']")
    wait_until("the typed partition", lambda: typed in webserver.partition_keys())
    browser.get(webserver.base + "/locations/rusing_ops/jobs/restore_database/playground")
    wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".CodeMirror")))
    box = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "input[placeholder='Partition']")))
    box.click()
    box.send_keys(Keys.END, *[Keys.BACKSPACE] * len(box.get_attribute("value") or ""))  # this tab remembers the
    click(f"//*[normalize-space(text())='{typed}']")  # last partition, which filters the list: empty the box first
    wait_until("the typed partition picked", lambda: picked() == typed)
    browser.execute_script("document.querySelector('.CodeMirror').CodeMirror.setValue(arguments[0])",
                           f"ops:\n  restore_database_op:\n    config:\n      confirm: {fresh_db.database}\n")
    wait_until("the config to validate", lambda: "Missing required config" not in page_text())
    backups = webserver.partition_keys()
    click("//button[normalize-space(.)='Launch Run']")
    typed_run = webserver.finished_run("restore_database", 3)
    assert typed_run["status"] == "FAILURE"
    wait_until("the refusal of the typed partition", lambda: f"Partition {typed} of database_backup is not a backup"
               in page_text())
    text = page_text()
    assert "added by hand" in text and "Nothing was restored; nothing was changed." in text
    assert "Stack Trace" not in text and 'File "' not in text
    browser.save_screenshot(str(shots / "07-typed-partition-refused.png"))
    assert webserver.alerts_for(typed_run["runId"]) == []
    assert webserver.partition_keys() == backups  # no backup was taken (the sensor removes the typed name)
    with db_conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM enrollments")
        assert cur.fetchone()[0] == 3
