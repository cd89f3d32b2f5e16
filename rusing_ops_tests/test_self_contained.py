"""The repository works from a plain clone: no code or test reaches outside its own tree (e.g. ``../shared``)."""

from __future__ import annotations

import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["rusing_ops", "rusing_ops_tests", "bench", "scripts"]


def string_literals(path: Path):
    """(line, text) of every string literal in a Python file (comments and docstrings that cite a source are
    strings too, so only literals that look like a path out of the tree are flagged by the test)."""
    with open(path, "rb") as f:
        for tok in tokenize.tokenize(f.readline):
            if tok.type == tokenize.STRING:
                yield tok.start[0], tok.string


def outside_references(path: Path) -> list[str]:
    found = []
    for line, text in string_literals(path):
        body = text.strip("\"'rbfu")
        if body in ("shared", "../shared") or body.startswith(("../shared", "shared/fixtures", "../../shared")):
            shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
            found.append(f"{shown}:{line}: {text[:60]}")
    return found


def test_no_python_file_builds_a_path_out_of_the_repository():
    offenders = []
    for folder in SCANNED:
        for path in (ROOT / folder).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue
            offenders += outside_references(path)
    assert offenders == []


def test_the_scan_sees_a_path_out_of_the_tree(tmp_path):
    """The check above can fail: a file that builds ``.. / "shared" / "fixtures"`` is flagged."""
    probe = tmp_path / "probe.py"  # never written into the source tree
    probe.write_text('from pathlib import Path\nF = Path(__file__).parent.parent / "shared" / "fixtures"\n')
    assert [r.split(": ", 1)[1] for r in outside_references(probe)] == ['"shared"']


def test_shell_scripts_do_not_read_shared():
    for script in [ROOT / ".ci" / "run", *(ROOT / "scripts").iterdir()]:
        text = script.read_text(errors="replace")
        reads = [ln for ln in text.splitlines() if "shared" in ln and not ln.lstrip().startswith("#")
                 and "test ! -e" not in ln and "no ../shared" not in ln]
        assert reads == [], f"{script.name} mentions ../shared outside a comment: {reads}"


def test_fixtures_are_in_the_repository():
    fixtures = ROOT / "rusing_ops_tests" / "fixtures"
    assert (fixtures / "ORIGIN.md").is_file()
    for name in ("drizzle-rusing", "drizzle-rusing-failing-rename", "synthetic-edge-cases"):
        assert any((fixtures / name).rglob("*.sql")), name
