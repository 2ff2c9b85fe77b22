"""Errors a user can act on. The entry point prints their message without a traceback."""


class UserError(Exception):
    """A problem with the user's config, data or run directory, explained in the message."""


class ConfigError(UserError):
    """A config key has a bad value; the message names the key."""


class DataError(UserError):
    """A data file is malformed; the message names the file, the row and the field."""


class StageConflict(UserError):
    """A finished stage was produced by a different config than the one now asked for."""
