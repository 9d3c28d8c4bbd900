"""The cron DSL: small builders that return plain 5-field cron strings
(`every(5).minutes()` is `"*/5 * * * *"`); `every(n).seconds()` is a `timedelta`."""

from __future__ import annotations

import re
from datetime import timedelta

_WEEKDAYS = {
    "sunday": 0, "sun": 0, "monday": 1, "mon": 1, "tuesday": 2, "tue": 2, "wednesday": 3,
    "wed": 3, "thursday": 4, "thu": 4, "friday": 5, "fri": 5, "saturday": 6, "sat": 6,
}  # fmt: skip


def _hour_minute(time: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", time) if isinstance(time, str) else None
    if match is None:
        raise ValueError(f"Time must be in HH:MM format (24-hour); got {time!r}")
    hour, minute = int(match[1]), int(match[2])
    if hour > 23 or minute > 59:
        raise ValueError(f"Time out of range (00:00-23:59); got {time!r}")
    return hour, minute


class Every:
    """`every(n)`: pick the unit."""

    def __init__(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"every(n) requires a positive integer; got {n!r}")
        self.n = n

    def seconds(self) -> timedelta:
        return timedelta(seconds=self.n)

    def minutes(self) -> str:
        return f"*/{self.n} * * * *"

    def hours(self) -> str:
        return f"0 */{self.n} * * *"

    def days(self) -> str:
        """A day-of-month step (`0 0 */n * *`), as cron means it: not every n days across months."""
        return f"0 0 */{self.n} * *"


class _AtTime:
    """A builder whose terminal is `.at("HH:MM")`; `str()` of it fires at midnight."""

    def _fields(self) -> str:
        raise NotImplementedError

    def at(self, time: str) -> str:
        hour, minute = _hour_minute(time)
        return f"{minute} {hour} {self._fields()}"

    def __str__(self) -> str:
        return f"0 0 {self._fields()}"


class Daily(_AtTime):
    def _fields(self) -> str:
        return "* * *"


class Weekly(_AtTime):
    def __init__(self) -> None:
        self.weekday = 0

    def on(self, day: str | int) -> Weekly:
        if isinstance(day, bool) or not isinstance(day, (str, int)):
            raise ValueError(
                f"weekly().on() takes a weekday name or 0..6 (Sunday = 0); got {day!r}"
            )
        number = _WEEKDAYS.get(day.lower()) if isinstance(day, str) else day
        if number is None or not 0 <= number <= 6:
            raise ValueError(
                f"weekly().on() takes a weekday name or 0..6 (Sunday = 0); got {day!r}"
            )
        self.weekday = number
        return self

    def _fields(self) -> str:
        return f"* * {self.weekday}"


class Monthly(_AtTime):
    def __init__(self) -> None:
        self.day = 1

    def on_day(self, day: int) -> Monthly:
        if isinstance(day, bool) or not isinstance(day, int) or not 1 <= day <= 31:
            raise ValueError(f"monthly().on_day() takes a day of the month 1..31; got {day!r}")
        self.day = day
        return self

    def _fields(self) -> str:
        return f"{self.day} * *"


def every(n: int) -> Every:
    return Every(n)


def daily() -> Daily:
    return Daily()


def weekly() -> Weekly:
    return Weekly()


def monthly() -> Monthly:
    return Monthly()


def cron(expression: str) -> str:
    """A cron expression as it is (checked by the database when a schedule is added)."""
    if not isinstance(expression, str):
        raise TypeError(f"cron() takes a string; got {type(expression).__name__}")
    return expression
