"""Shared entry-point behaviour for stages and commands: clear one-line errors and exit code 2 on bad input."""
from __future__ import annotations

import functools
import os
import sys

from .allocator import keep_large_allocations

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


class UserError(RuntimeError):
    """Bad input a user can fix (missing file, bad checksum, offline asset): shown without a traceback."""


def user_errors():
    from .io.checkpoint import CheckpointError
    from .io.ir_reader import IRFormatError
    from .params import ParamsError

    return (UserError, ParamsError, CheckpointError, IRFormatError)


def entry_point(main):
    """Decorate a stage's `main()`: known user errors print `error: ...` to stderr and exit 2.

    Also applies the process-wide allocator setting every stage benefits from (see `allocator`)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        keep_large_allocations()
        try:
            return main(*args, **kwargs)
        except user_errors() as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
