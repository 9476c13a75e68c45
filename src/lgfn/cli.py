"""What the console scripts (lgfn-upscale, lgfn-prepare, lgfn-convert) share: usage errors and one-line messages."""

from __future__ import annotations


class UsageError(Exception):
    """Bad command-line usage found after parsing (exit code 2)."""


def error_line(e: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none): what a console script prints."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
