"""The errors that end a task with one line naming the key or file (no traceback)."""


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key."""

