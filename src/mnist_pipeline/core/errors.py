"""Errors whose message is meant for the user: stages print them in one line and exit non-zero."""


class PipelineError(Exception):
    """An expected failure (bad input, bad settings, unreachable data) with a self-explaining message."""


class ConfigError(PipelineError, ValueError):
    """A setting is missing, of the wrong type or out of range; the message names the key."""


class Terminated(BaseException):
    """SIGTERM arrived: like KeyboardInterrupt, not an error of the program, so not an Exception."""
