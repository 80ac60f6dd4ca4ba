"""Helpers shared by test modules (import as `from helpers import ...`; pytest puts tests/ on sys.path)."""
import runpy
import sys


def run_stage(root, name, *args):
    """Run stages/<name>.py in-process with argv; returns the exit code (0 when main() returned)."""
    old = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_path(str(root / "stages" / f"{name}.py"), run_name="__main__")
        return 0
    except SystemExit as e:
        return e.code
    finally:
        sys.argv = old
