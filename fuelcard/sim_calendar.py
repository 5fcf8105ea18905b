"""Calendar helpers for the simulated network: local time (UTC+8), weekdays, Chinese public holidays.

Public holidays come from the ``chinese_calendar`` package (official State Council schedule, makeup
working days included) for the years it covers; for other years a documented fallback is used: the
fixed-date holidays, Qingming on 4–6 April, and the Spring Festival from a small table of lunar new
year dates (no makeup working days in the fallback).

>>> from datetime import date
>>> holiday_name(date(2026, 2, 17))
'Spring Festival'
>>> is_holiday(date(2026, 1, 10)), is_workday(date(2026, 1, 4))  # a plain Saturday; a makeup Sunday
(False, True)
>>> holiday_name(date(2031, 10, 2))  # fallback year
'National Day'
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from functools import lru_cache

import pandas as pd

#: The network lives in China Standard Time.
LOCAL_TZ = timezone(timedelta(hours=8), name="UTC+08:00")
LOCAL_OFFSET = timedelta(hours=8)

# Lunar new year (Spring Festival day 1) for years outside chinese_calendar's table.
_LUNAR_NEW_YEAR = {
    2000: date(2000, 2, 5), 2001: date(2001, 1, 24), 2002: date(2002, 2, 12), 2003: date(2003, 2, 1),
    2027: date(2027, 2, 6), 2028: date(2028, 1, 26), 2029: date(2029, 2, 13), 2030: date(2030, 2, 3),
    2031: date(2031, 1, 23), 2032: date(2032, 2, 11), 2033: date(2033, 1, 31), 2034: date(2034, 2, 19),
    2035: date(2035, 2, 8), 2036: date(2036, 1, 28), 2037: date(2037, 2, 15), 2038: date(2038, 2, 4),
    2039: date(2039, 1, 24), 2040: date(2040, 2, 12),
}


def local_time(ts: pd.Series | pd.DatetimeIndex | datetime) -> pd.Series | pd.DatetimeIndex | datetime:
    """Convert UTC timestamps (aware, or naive meaning UTC) to local network time (UTC+8, aware).

    >>> local_time(datetime(2026, 1, 1, 23, 30, tzinfo=timezone.utc)).hour
    7
    """
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=UTC)
        return ts.astimezone(LOCAL_TZ)
    if isinstance(ts, pd.Series):
        s = ts if ts.dt.tz is not None else ts.dt.tz_localize("UTC")
        return s.dt.tz_convert(LOCAL_TZ)
    idx = ts if ts.tz is not None else ts.tz_localize("UTC")
    return idx.tz_convert(LOCAL_TZ)


def local_hour(ts: pd.Series) -> pd.Series:
    """Local hour of day (0–23) of UTC timestamps."""
    return local_time(ts).dt.hour


@lru_cache(maxsize=64)
def _fallback_year(year: int) -> dict[date, str]:
    days: dict[date, str] = {date(year, 1, 1): "New Year's Day"}
    for k in range(3):
        days[date(year, 4, 4) + timedelta(k)] = "Tomb-sweeping Day"
    for k in range(5):
        days[date(year, 5, 1) + timedelta(k)] = "Labour Day"
    for k in range(7):
        days[date(year, 10, 1) + timedelta(k)] = "National Day"
    lny = _LUNAR_NEW_YEAR.get(year)
    if lny is not None:
        for k in range(-1, 7):  # new year's eve to the 7th day
            days[lny + timedelta(k)] = "Spring Festival"
    return days


def _official(day: date) -> tuple[bool, bool, str | None] | None:
    """(is_holiday, is_workday, name) from chinese_calendar, or None when the year is not covered."""
    try:
        import chinese_calendar as cc

        workday = bool(cc.is_workday(day))
        is_hol, name = cc.get_holiday_detail(day)
    except (NotImplementedError, ImportError):
        return None
    named_off = bool(is_hol) and name is not None
    return named_off, workday, (str(name) if named_off else None)


@lru_cache(maxsize=8192)
def day_info(day: date) -> tuple[bool, bool, str]:
    """``(is_holiday, is_workday, holiday_name)`` for a local calendar day.

    ``is_holiday`` means a named public holiday day off (not an ordinary weekend); ``is_workday`` follows the
    official schedule including makeup working days; ``holiday_name`` is ``''`` when not a holiday.
    """
    official = _official(day)
    if official is not None:
        hol, work, name = official
        return hol, work, name or ""
    name = _fallback_year(day.year).get(day, "")
    hol = bool(name)
    return hol, (not hol and day.weekday() < 5), name


def is_holiday(day: date) -> bool:
    """True on a named Chinese public holiday day off."""
    return day_info(day)[0]


def is_workday(day: date) -> bool:
    """True on an official working day (makeup working days on weekends included)."""
    return day_info(day)[1]


def holiday_name(day: date) -> str:
    """English name of the public holiday on ``day`` or ``''``."""
    return day_info(day)[2]


def calendar_frame(start: date, days: int) -> pd.DataFrame:
    """One row per local day: ``date, weekday (0=Mon), is_holiday, is_workday, holiday_name``."""
    dates = [start + timedelta(k) for k in range(days)]
    info = [day_info(d) for d in dates]
    return pd.DataFrame({
        "date": dates,
        "weekday": [d.weekday() for d in dates],
        "is_holiday": [i[0] for i in info],
        "is_workday": [i[1] for i in info],
        "holiday_name": [i[2] for i in info],
    })
