"""User-facing errors: one line, exit code 2, nothing submitted."""

from __future__ import annotations


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
        # Never let a multi-line message through: the contract is one line.
        super().__init__(" ".join(text.split("\n")))
