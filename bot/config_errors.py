"""The error of a setting that is missing or wrong (bot.config and the sections kept beside it)."""


class ConfigError(Exception):
    """A setting is missing or wrong; the message names it and says what to do."""
