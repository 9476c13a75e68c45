"""The one ``main`` of every console script (lgfn-upscale, lgfn-export, lgfn-convert, lgfn-prepare).

``console_main(prog, parser, run, interrupted=...)`` parses the arguments and runs the command with the
project's rules: bad usage (``UsageError``) prints the usage line and exits 2; any other error prints one
line ``PROG: error: <first line>`` and exits 1 (``LGFN_DEBUG=1`` shows the traceback instead); Ctrl-C prints
what was kept and exits 130.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable


class UsageError(Exception):
    """Bad command-line usage found after parsing (exit code 2)."""


def error_line(e: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none): what a console script prints."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def console_main(prog: str, parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], object],
                 argv: list[str] | None = None, interrupted: str = "interrupted") -> int:
    """Parse ``argv``, call ``run(args)``; returns the exit code (``run``'s int, else 0)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 on bad usage, 0 for --help
        return int(e.code or 0)
    try:
        code = run(args)
        return code if isinstance(code, int) and not isinstance(code, bool) else 0
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: {interrupted}", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - every failure ends in one line
        if os.environ.get("LGFN_DEBUG") == "1":
            raise
        print(f"{prog}: error: {error_line(e)}", file=sys.stderr)
        return 1
