"""Shared entry-point behaviour for stages and commands: clear one-line errors and exit code 2 on bad input."""
from __future__ import annotations

import functools
import os
import sys

from .allocator import keep_large_allocations
from .errors import UserError

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def entry_point(main):
    """Decorate a stage's `main()`: user errors print `error: ...` to stderr and exit 2.

    Also applies the process-wide allocator setting every stage benefits from (see `allocator`)."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        keep_large_allocations()
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper
