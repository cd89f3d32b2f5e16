"""`generate_migrations`: run the app's `drizzle-kit generate` (DRIZZLE_GENERATE_COMMAND) and report what it wrote.

The command runs as a subprocess in the app repository (the Drizzle folder's parent), without a shell. The files it
added or changed are listed, the new migrations linted, and the folder re-validated; nothing touches the database.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.dburl import scrub_secret
from ..core.errors import ConfigError, OpsError
from .folder import load_folder
from .lint import Finding, lint_migrations


class GenerateFailed(OpsError):
    """The generate command is missing or failed; the folder is reported as it is."""


@dataclass
class GenerateResult:
    command: str
    cwd: str
    returncode: int
    output: str
    duration_s: float
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    new_migrations: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    folder_errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"`{self.command}` in {self.cwd}: exit {self.returncode} in {self.duration_s:.1f}s"]
        out += [f"added {name}" for name in self.added] + [f"changed {name}" for name in self.changed]
        if not self.added and not self.changed:
            out.append("no files written (the schema matches the latest snapshot)")
        out += [f"DESTRUCTIVE {f}" for f in self.findings]
        out += [f"FOLDER {e}" for e in self.folder_errors]
        return out

    def as_dict(self) -> dict:
        return {"command": self.command, "cwd": self.cwd, "returncode": self.returncode, "added": self.added,
                "changed": self.changed, "new_migrations": self.new_migrations,
                "destructive": [f.as_dict() for f in self.findings], "folder_errors": self.folder_errors,
                "output_tail": self.output[-4000:]}


def _fingerprint(folder: Path) -> dict[str, str]:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def generate_migrations(folder: Path | str, command: str, *, cwd: Path | str | None = None,
                        timeout_s: float = 300.0) -> GenerateResult:
    """Run ``command`` (e.g. ``pnpm drizzle-kit generate``) and report the files it wrote in ``folder``.

    :param folder: the Drizzle folder (DRIZZLE_DIR).
    :param command: DRIZZLE_GENERATE_COMMAND, split like a shell would but run without one.
    :param cwd: the app repository; default: the folder's parent.
    """
    folder = Path(folder)
    cwd = Path(cwd) if cwd else folder.resolve().parent
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise ConfigError(f"DRIZZLE_GENERATE_COMMAND {command!r} cannot be parsed ({exc}).") from None
    if not argv:
        raise ConfigError("DRIZZLE_GENERATE_COMMAND is empty.", next_step="set it, e.g. `pnpm drizzle-kit generate`.")
    before = _fingerprint(folder)
    before_tags = {m.tag for m in load_folder(folder).migrations}
    started = time.monotonic()
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise GenerateFailed(
            f"`{argv[0]}` is not installed or not on PATH, so `{command}` cannot run in {cwd}.",
            next_step="install the app's tooling there (e.g. `pnpm install`) or set DRIZZLE_GENERATE_COMMAND.",
            command=command) from None
    except subprocess.TimeoutExpired:
        raise GenerateFailed(f"`{command}` did not finish within {timeout_s:g}s in {cwd} (it may be waiting for a "
                             "rename prompt, which needs an interactive terminal).", changed=None,
                             next_step=f"run `{command}` by hand in {cwd}, then `rusing-ops db validate`.") from None
    output = scrub_secret((proc.stdout or "") + (proc.stderr or ""))
    result = GenerateResult(command=command, cwd=str(cwd), returncode=proc.returncode, output=output,
                            duration_s=round(time.monotonic() - started, 2))
    after = _fingerprint(folder)
    result.added = sorted(set(after) - set(before))
    result.changed = sorted(n for n in set(after) & set(before) if after[n] != before[n])
    if proc.returncode != 0:
        tail = " | ".join(output.strip().splitlines()[-5:])
        raise GenerateFailed(f"`{command}` exited with {proc.returncode} in {cwd}: {tail}",
                             changed=bool(result.added or result.changed) or False,
                             next_step="fix the error above and rerun `rusing-ops db generate`.",
                             added=result.added, changed_files=result.changed)
    loaded = load_folder(folder)
    new = [m for m in loaded.migrations if m.tag not in before_tags]
    result.new_migrations = [m.tag for m in new]
    result.findings = lint_migrations(loaded, new)
    result.folder_errors = [str(p) for p in loaded.errors]
    return result
