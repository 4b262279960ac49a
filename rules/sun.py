"""Sunrise and sunset from latitude, longitude and date (NOAA solar calculator equations).

Pure: a lamp's "should it be lit" depends on where it stands and the date, not on a clock.
Accuracy is about a minute for |lat| < 60°, which is far inside the margins lamp rules use.
Reference: NOAA Global Monitoring Laboratory, "General Solar Position Calculations"
(https://gml.noaa.gov/grad/solcalc/solareqns.PDF); the sun is "up" when its centre is
above -0.833° (refraction and the solar disc).
"""

from __future__ import annotations

import datetime as dt
import math
from functools import lru_cache

_ZENITH_DEG = 90.833


def _eq_time_and_decl(day_of_year: int, hour_utc: float, days_in_year: int) -> tuple[float, float]:
    """(equation of time in minutes, declination in radians) for a UTC hour of a day."""
    gamma = 2.0 * math.pi / days_in_year * (day_of_year - 1 + (hour_utc - 12.0) / 24.0)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    return eqtime, decl


def _event_minutes_utc(lat: float, lon: float, date: dt.date, rising: bool) -> float | None:
    """Minutes after 00:00 UTC of ``date`` of sunrise/sunset; None for polar day/night."""
    doy = date.timetuple().tm_yday
    days = 366 if (date.year % 4 == 0 and (date.year % 100 != 0 or date.year % 400 == 0)) else 365
    guess_h = 12.0 - lon / 15.0  # local solar noon in UTC hours; refine twice at the event time
    minutes = guess_h * 60.0
    for _ in range(3):
        eqtime, decl = _eq_time_and_decl(doy, minutes / 60.0, days)
        phi = math.radians(lat)
        cos_ha = math.cos(math.radians(_ZENITH_DEG)) / (math.cos(phi) * math.cos(decl)) - math.tan(phi) * math.tan(decl)
        if cos_ha > 1.0 or cos_ha < -1.0:
            return None
        ha = math.degrees(math.acos(cos_ha))
        minutes = 720.0 - 4.0 * (lon + (ha if rising else -ha)) - eqtime
    return minutes


@lru_cache(maxsize=65536)
def sun_times(lat: float, lon: float, date: dt.date) -> tuple[float | None, float | None]:
    """(sunrise, sunset) as Unix seconds for the *UTC* calendar date ``date``.

    Either is None where the sun does not rise or set that day (polar day/night). For
    longitudes far east (China, UTC+8) the local morning sunrise falls on the previous UTC
    day; callers asking "is the sun up at t" should use :func:`sun_is_up`, which handles it.
    """
    midnight = dt.datetime(date.year, date.month, date.day, tzinfo=dt.UTC).timestamp()
    rise = _event_minutes_utc(lat, lon, date, rising=True)
    sset = _event_minutes_utc(lat, lon, date, rising=False)
    return (
        None if rise is None else midnight + rise * 60.0,
        None if sset is None else midnight + sset * 60.0,
    )


def local_solar_date(lon: float, t: float) -> dt.date:
    """The calendar date at the place's mean solar time: the day whose noon is nearest ``t``."""
    return dt.datetime.fromtimestamp(t + lon / 15.0 * 3600.0, tz=dt.UTC).date()


def local_sun_times(lat: float, lon: float, t: float) -> tuple[float | None, float | None]:
    """(sunrise, sunset) in Unix seconds of the local solar day containing ``t``."""
    day = local_solar_date(lon, t)
    # compute on the UTC date of local noon, then shift whole days so both events bracket local noon
    noon_utc = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() + 43200.0 - lon / 15.0 * 3600.0
    utc_day = dt.datetime.fromtimestamp(noon_utc, tz=dt.UTC).date()
    rise, sset = sun_times(round(lat, 4), round(lon, 4), utc_day)
    if rise is not None:
        while rise > noon_utc:
            rise -= 86400.0
        while rise < noon_utc - 86400.0:
            rise += 86400.0
    if sset is not None:
        while sset < noon_utc:
            sset += 86400.0
        while sset > noon_utc + 86400.0:
            sset -= 86400.0
    return rise, sset


@lru_cache(maxsize=65536)
def day_events(lat: float, lon: float, day: int) -> tuple[float | None, float | None, bool]:
    """(sunrise, sunset, polar_day) of local solar day number ``day`` (days since 1970 at local mean time).

    Public (and cached) because the vectorised lamp backtest walks day by day with it.
    """
    noon = day * 86400.0 - lon / 15.0 * 3600.0 + 43200.0
    rise, sset = local_sun_times(lat, lon, noon)
    polar_day = False
    if rise is None or sset is None:
        _eq, decl = _eq_time_and_decl(local_solar_date(lon, noon).timetuple().tm_yday, 12.0, 365)
        polar_day = (lat > 0) == (decl > 0)  # polar: summer hemisphere means day
    return rise, sset, polar_day


def sun_is_up(lat: float, lon: float, t: float, margin_s: float = 0.0) -> bool | None:
    """True if the sun is above the horizon at ``t`` by at least ``margin_s`` on both sides.

    ``margin_s`` > 0 shrinks the day (True only well after sunrise and well before sunset);
    None means "twilight": within the margin of sunrise or sunset, where no lamp rule should fire.
    Polar day is True and polar night False.
    """
    day = math.floor((t + lon / 15.0 * 3600.0) / 86400.0)
    rise, sset, polar_day = day_events(lat, lon, day)
    if rise is None or sset is None:
        return polar_day
    if rise + margin_s <= t <= sset - margin_s:
        return True
    if t < rise - margin_s or t > sset + margin_s:
        return False
    return None
