"""generate-only: a real subprocess stands in for drizzle-kit (writes a migration the way drizzle-kit does)."""

from __future__ import annotations

import shlex
import sys
import textwrap

import pytest

from rusing_ops.migrations.generate import GenerateFailed, generate_migrations

FAKE_DRIZZLE_KIT = textwrap.dedent('''
    import json, pathlib, uuid
    out = pathlib.Path("drizzle")
    journal = json.loads((out / "meta/_journal.json").read_text())
    last = journal["entries"][-1]
    snap = json.loads((out / "meta" / (last["tag"].split("_")[0] + "_snapshot.json")).read_text())
    idx = last["idx"] + 1
    tag = f"{idx:04d}_drop_bio"
    (out / f"{tag}.sql").write_text("ALTER TABLE `coaches` DROP COLUMN `bioFr`;")
    del snap["tables"]["coaches"]["columns"]["bioFr"]
    snap["prevId"], snap["id"] = snap["id"], str(uuid.uuid4())
    (out / "meta" / f"{idx:04d}_snapshot.json").write_text(json.dumps(snap, indent=2))
    journal["entries"].append({"idx": idx, "version": "5", "when": last["when"] + 1000, "tag": tag, "breakpoints": True})
    (out / "meta/_journal.json").write_text(json.dumps(journal, indent=2))
    print("[✓] Your SQL migration file ➜ drizzle/" + tag + ".sql 🚀")
''')


def test_reports_new_files_and_their_lint(rusing_folder):
    (rusing_folder.parent / "fake_kit.py").write_text(FAKE_DRIZZLE_KIT)
    result = generate_migrations(rusing_folder, f"{shlex.quote(sys.executable)} fake_kit.py")
    assert result.added == ["0005_drop_bio.sql", "meta/0005_snapshot.json"]
    assert result.changed == ["meta/_journal.json"]
    assert result.new_migrations == ["0005_drop_bio"]
    assert [str(f) for f in result.findings] == ["0005_drop_bio statement 1: DROP COLUMN coaches.bioFr (its data is deleted)"]
    assert result.folder_errors == []
    assert "Your SQL migration file" in result.output


def test_missing_tool_is_refused_cleanly(rusing_folder):
    with pytest.raises(GenerateFailed) as err:
        generate_migrations(rusing_folder, "pnpm-not-installed-here drizzle-kit generate")
    assert str(err.value) == (
        f"`pnpm-not-installed-here` is not installed or not on PATH, so `pnpm-not-installed-here drizzle-kit generate` "
        f"cannot run in {rusing_folder.parent}. Nothing was changed. Next: install the app's tooling there "
        "(e.g. `pnpm install`) or set DRIZZLE_GENERATE_COMMAND.")


def test_failing_tool_reports_its_output(rusing_folder):
    with pytest.raises(GenerateFailed) as err:
        generate_migrations(rusing_folder, f"{shlex.quote(sys.executable)} -c \"import sys; sys.exit('schema.ts: boom')\"")
    assert "exited with 1" in str(err.value) and "schema.ts: boom" in str(err.value)
