"""One error type for bad input, so the CLI can print one line and exit 2.

Every message names where the problem is (file, line, field) so a user can fix
it without reading a traceback.
"""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input: a malformed trace line, an unknown config key, an impossible config."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.file = file
        self.line = line
        self.field = field
        self.detail = message
        super().__init__(self.format())

    def format(self) -> str:
        where = []
        if self.file is not None:
            where.append(str(self.file) if self.line is None else f"{self.file}:{self.line}")
        if self.field is not None:        # a command-line flag is not a field
            kind = "flag" if self.field.startswith("-") else "field"
            where.append(f"{kind} '{self.field}'")
        prefix = ", ".join(where)
        return one_line(f"{prefix}: {self.detail}" if prefix else self.detail)


def one_line(text: str) -> str:
    """``text`` with control characters (newlines, tabs, ...) shown escaped, as ``repr`` does,
    so an error that echoes user input (a key, a trace field) stays on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
