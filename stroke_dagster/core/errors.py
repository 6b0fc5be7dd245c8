"""Errors that carry a one-line, user-facing message (CLI exit code 2, HTTP 422)."""


class InputError(ValueError):
    """The input cannot be used as a whole: unreadable file, missing columns, wrong column type."""


class RegistryUnavailableError(RuntimeError):
    """The model registry cannot be reached or answered with an error (one line; CLI exit 1)."""
