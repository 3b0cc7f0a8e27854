"""Errors a user can cause (bad files, bad prompts). The CLI and the server report
them in one line; anything else is a bug and keeps its traceback."""


class UserError(ValueError):
    """A problem with the user's input, reported without a traceback."""
