"""The one exception type for user mistakes: CLIs print it as a one-line error instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (missing data, wrong checkpoint, bad shape); the message says how to fix it."""
