"""The errors Soniq raises: one exception type whose `code` says what went wrong."""

from __future__ import annotations


class SoniqError(Exception):
    """A refusal or failure of Soniq, with a stable `code` (`SONIQ_UNKNOWN_TASK_NAME`, ...)
    and, when the database refused, the SQLSTATE it gave."""

    def __init__(self, code: str, message: str, *, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


# Codes, named once so tests and callers can compare against them.
INVALID_TASK_NAME = "SONIQ_INVALID_TASK_NAME"
UNKNOWN_TASK_NAME = "SONIQ_UNKNOWN_TASK_NAME"
TASK_ARGS_INVALID = "SONIQ_TASK_ARGS_INVALID"
INVALID_OPTION = "SONIQ_INVALID_OPTION"
INVALID_SETTING = "SONIQ_INVALID_SETTING"
UNSUPPORTED_CONNECTION = "SONIQ_UNSUPPORTED_CONNECTION"
NOT_INITIALIZED = "SONIQ_NOT_INITIALIZED"
APP_CLOSED = "SONIQ_APP_CLOSED"
INIT_ERROR = "SONIQ_INIT_ERROR"
DATABASE_REFUSED = "SONIQ_DATABASE_REFUSED"
NOT_FOUND = "SONIQ_NOT_FOUND"
NOT_SUPPORTED = "SONIQ_NOT_SUPPORTED"
NO_HANDLERS = "SONIQ_NO_HANDLERS"
