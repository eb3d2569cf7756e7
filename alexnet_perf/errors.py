"""The exceptions CLIs turn into one line instead of a traceback: a user mistake, and SIGTERM."""


class UserError(Exception):
    """Bad input from the user (missing data, wrong checkpoint, bad shape); the message says how to fix it."""


class Terminated(BaseException):
    """SIGTERM (how schedulers and container runtimes stop a job), raised by the handler flags.run installs so that
    cleanup runs as for Ctrl-C; the command then exits 143 (128 + SIGTERM) in one line. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` swallows it."""
