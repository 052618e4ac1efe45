"""User-facing errors: one line, exit code 2, nothing submitted."""

from __future__ import annotations

import re

# Control characters (C0, DEL, C1, line/paragraph separators): never on the terminal, never in an sbatch header.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class UserError(Exception):
    """Bad input from the user (experiment file, CLI flag, data root, profile).

    The CLI prints ``vitbench: error: <message>`` on one line and exits with code 2.
    The message should name the file, the key path and what is allowed.
    """

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None) -> None:
        parts = []
        if file:
            parts.append(str(file))
        if key:
            parts.append(key)
        prefix = ": ".join(parts)
        text = f"{prefix}: {message}" if prefix else message
        # Never let a multi-line message through: the contract is one line; other control characters
        # (a key read from a hostile file) are shown escaped, never sent to the terminal.
        text = " ".join(text.split("\n"))
        super().__init__(CONTROL.sub(lambda m: repr(m.group())[1:-1], text))


class ClusterBusy(UserError):
    """The cluster refused jobs because its queue is full (MaxSubmitJobs, MaxJobCount): one line, but
    exit code 1 — the input was right, the same command works later."""

    exit_code = 1
