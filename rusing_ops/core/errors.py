"""Typed errors that carry what an operator needs: what failed, what state things are in, what to do next."""

from __future__ import annotations


class OpsError(Exception):
    """Base of every error this tool raises on purpose.

    ``changed`` says whether anything was modified before the failure (``False`` means "nothing was changed"),
    ``next_step`` is the exact command or action that should come next.
    """

    def __init__(self, message: str, *, changed: bool | None = False, next_step: str | None = None, **data):
        self.message = message
        self.changed = changed
        self.next_step = next_step
        self.data = data
        super().__init__(self.render())

    def render(self) -> str:
        text = self.message
        if self.changed is False and "nothing was changed" not in text.lower():
            text += " Nothing was changed."
        if self.next_step:
            text += f" Next: {self.next_step}"
        return text


class ConfigError(OpsError):
    """A setting is missing or malformed."""


class DatabaseUnavailable(OpsError):
    """The database could not be reached or refused the login."""


class LockBusy(OpsError):
    """Another process holds the named database lock."""


class StoreError(OpsError):
    """The backup store could not complete an operation."""


class NotFound(OpsError):
    """A named object (backup, migration, event) does not exist."""


class ConfirmMismatch(ConfigError):
    """A destructive job was not confirmed with the name of the database it would change."""


def require_confirm(confirm: str | None, target: str, consequence: str = "nothing was done") -> None:
    """Destructive procedures need ``confirm`` == the target database's name; refuse otherwise.

    :param consequence: what the refusal spared, e.g. "the app was not stopped and nothing was restored".
    """
    if confirm != target:
        raise ConfirmMismatch(f"confirm {confirm!r} does not match the target database {target!r}; {consequence}.",
                              next_step=f"set confirm to {target!r} (`--confirm {target}`).", target=target)
