"""Errors a user can fix (bad params, missing or corrupt files, offline assets): the bottom of the package.

Every stage's entry point (`cli.entry_point`) prints them as one line and exits 2; anything else is a bug and keeps
its traceback. Subclasses say which kind of input was wrong.
"""


class UserError(RuntimeError):
    """Bad input a user can fix: shown without a traceback, exit code 2."""


class ParamsError(UserError, ValueError):
    """A params.yaml value, key or section that the schema (`edgestylegan.config`) rejects."""


class CheckpointError(UserError):
    """A model file that is missing, unreadable or of another format."""


class IRFormatError(UserError):
    """An OpenVINO IR whose constants do not match the MobileStyleGAN architecture."""
