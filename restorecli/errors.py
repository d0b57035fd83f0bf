"""Exceptions that the command line turns into one-line messages."""


class RestoreCliError(Exception):
    """A runtime failure the user can fix; the CLI prints it and exits with code 1."""

    exit_code = 1


class UsageError(RestoreCliError):
    """An invalid option, value or config key; the CLI prints it and exits with code 2."""

    exit_code = 2
