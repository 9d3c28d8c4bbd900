"""The caller's connection for a transactional enqueue: asyncpg, psycopg 3 (async), or an
SQLAlchemy async session or connection over either. The statement runs on that connection,
inside its transaction: the job exists if and only if that transaction commits."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from .errors import UNSUPPORTED_CONNECTION, SoniqError

_PLACEHOLDER = re.compile(r"\$(\d+)")


class Executor(Protocol):
    """Runs one statement and returns its rows (each a sequence of columns)."""

    async def rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]: ...


class AsyncpgExecutor:
    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        result: Sequence[Sequence[Any]] = await self.connection.fetch(sql, *args)
        return result


class PsycopgExecutor:
    """psycopg takes `%s` placeholders: `$n` are rewritten, the args put in their order."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection

    async def rows(self, sql: str, *args: Any) -> Sequence[Sequence[Any]]:
        order = [int(n) - 1 for n in _PLACEHOLDER.findall(sql)]
        cursor = await self.connection.execute(
            _PLACEHOLDER.sub("%s", sql), [args[i] for i in order]
        )
        result: Sequence[Sequence[Any]] = await cursor.fetchall()
        return result


def _module_of(value: object) -> str:
    return type(value).__module__ or ""


async def executor_for(connection: object) -> Executor:
    """The executor for a caller's connection; an unsupported one is refused by name."""
    module = _module_of(connection)
    if module.startswith("sqlalchemy"):
        connection = await _driver_connection(connection)
        module = _module_of(connection)
    if module.startswith("asyncpg"):
        return AsyncpgExecutor(connection)
    if module.startswith("psycopg") and hasattr(connection, "execute"):
        if not hasattr(connection, "__aenter__"):
            raise SoniqError(
                UNSUPPORTED_CONNECTION,
                "connection= takes a psycopg AsyncConnection; this is a synchronous psycopg connection",
            )
        return PsycopgExecutor(connection)
    raise SoniqError(
        UNSUPPORTED_CONNECTION,
        f"connection= takes an asyncpg connection, a psycopg 3 AsyncConnection or an SQLAlchemy "
        f"AsyncSession/AsyncConnection (asyncpg or psycopg driver); got {type(connection).__qualname__}",
    )


async def _driver_connection(value: Any) -> Any:
    """The driver connection under an SQLAlchemy AsyncSession or AsyncConnection (the one
    the session's transaction runs on)."""
    if hasattr(value, "get_raw_connection"):  # AsyncConnection
        connection = value
    elif hasattr(value, "connection") and hasattr(value, "begin"):  # AsyncSession
        connection = await value.connection()
    else:
        raise SoniqError(UNSUPPORTED_CONNECTION, f"cannot enqueue on {type(value).__qualname__}")
    raw = await connection.get_raw_connection()
    driver = raw.driver_connection
    if hasattr(driver, "is_in_transaction") and not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter opens the database transaction at its first
        # statement: one now, or the job would commit on its own, outside the session's.
        await connection.exec_driver_sql("SELECT 1")
    return driver
