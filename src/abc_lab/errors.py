"""Errors a user can cause and fix; the CLI prints their message as one line."""


class UserError(ValueError):
    """Bad input (override, data, checkpoint): the message names the value and the fix."""
