"""Cron calendar math: the UTC instants a schedule fires at in its IANA time zone.

The dialect is croniter's: five fields, or six with seconds as the trailing sixth, or the
@hourly/@daily/... macros. Candidates are wall-clock times in the schedule's zone (never
the host's). The daylight-saving rule, written once and tested against a brute-force scan:

1. A wall time that does not exist (a spring-forward gap) fires once, at the first valid
   instant after it: the end of the gap.
2. A wall time that exists twice (a fall-back) fires once, at its first occurrence —
   unless the schedule runs every hour (hour field `*`): then it fires at both, once per
   real hour.
3. Fires are strictly increasing in UTC; wall times that land on one instant fire once.

A schedule fires at most HORIZON_YEARS apart: one that has no fire within that span of
any instant (February 30th, say) has no next fire, and the API refuses it. Fifty years
keeps every leap-day schedule (at most eight years apart) valid.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from croniter import CroniterError, croniter

from corral.errors import InvalidArgument

UTC = dt.UTC
MARGIN = dt.timedelta(hours=4)  # larger than any zone's DST shift
SAMPLED_SPAN = dt.timedelta(days=2)  # the fast path checks offsets over at most this span,
SAMPLE_STEP = dt.timedelta(minutes=30)  # every half hour: no zone changes twice within that
HORIZON_YEARS = 50


class Schedule:
    def __init__(self, expr: str, zone: str = "") -> None:
        if not expr or not croniter.is_valid(expr):
            raise InvalidArgument(f"cron_schedule: {expr[:80]!r} is not a valid cron expression")
        try:
            self.tz = zoneinfo.ZoneInfo(zone or "UTC")
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidArgument(f"time_zone: {zone[:80]!r} is not a known IANA time zone") from None
        self.expr = expr
        self.every_hour = croniter(expr, dt.datetime(2000, 1, 1)).expanded[1] == ["*"]

    def instants(self, wall: dt.datetime) -> list[dt.datetime]:
        """The UTC instants one naive wall-clock time fires at (rules 1 and 2)."""
        first = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        if first == second:
            return [first]
        if first.astimezone(self.tz).replace(tzinfo=None) != wall:
            return [self._gap_end(min(first, second), max(first, second))]
        a, b = sorted((first, second))
        return [a, b] if self.every_hour else [a]

    def _gap_end(self, lo: dt.datetime, hi: dt.datetime) -> dt.datetime:
        """The transition instant between lo and hi (where the offset takes its later value)."""
        after = hi.astimezone(self.tz).utcoffset()
        lo_s, hi_s = int(lo.timestamp()), int(hi.timestamp())
        while hi_s - lo_s > 1:
            mid = (lo_s + hi_s) // 2
            if dt.datetime.fromtimestamp(mid, UTC).astimezone(self.tz).utcoffset() == after:
                hi_s = mid
            else:
                lo_s = mid
        return dt.datetime.fromtimestamp(hi_s, UTC)

    def _iter(self, start: dt.datetime) -> croniter:
        return croniter(self.expr, start, max_years_between_matches=HORIZON_YEARS)

    def next_after(self, after: dt.datetime, n: int = 1) -> list[dt.datetime]:
        """The next `n` fire instants strictly after `after` (an aware datetime), in UTC;
        fewer (none) where the schedule has no fire within HORIZON_YEARS."""
        try:
            return self._next_after(after, n)
        except CroniterError:  # no next fire within the horizon (or past year 9999)
            return self._next_after(after, n, tolerant=True)

    def _next_after(self, after: dt.datetime, n: int, tolerant: bool = False) -> list[dt.datetime]:
        after = after.astimezone(UTC)
        fast = None if tolerant else self._next_fixed_offset(after, n)
        if fast is not None:
            return fast
        start = after.astimezone(self.tz).replace(tzinfo=None) - MARGIN
        it = self._iter(start)
        found: set[dt.datetime] = set()
        stop_at: dt.datetime | None = None
        for _ in range(1_000_000):
            try:
                wall = it.get_next(dt.datetime)
            except CroniterError:
                if not tolerant:
                    raise
                break
            if stop_at is not None and wall > stop_at:
                break
            for inst in self.instants(wall):
                if inst > after:
                    found.add(inst)
            if stop_at is None and len(found) >= n:
                stop_at = wall + 2 * MARGIN  # later wall times can still map earlier (folds)
        return sorted(found)[:n]

    def _next_fixed_offset(self, after: dt.datetime, n: int) -> list[dt.datetime] | None:
        """The common case, fast: when the zone's offset is the same from MARGIN before
        `after` to MARGIN past the n-th candidate, wall times map one to one onto instants
        and need no DST rule. None when an offset change is near (or the span is long:
        sparse schedules are cheap on the general path anyway)."""
        local = after.astimezone(self.tz)
        it = self._iter(local.replace(tzinfo=None))
        walls = [it.get_next(dt.datetime) for _ in range(n)]
        offset = local.utcoffset()
        out = [(w - offset).replace(tzinfo=UTC) for w in walls]  # type: ignore[operator]
        lo, hi = after - MARGIN, out[-1] + MARGIN
        if hi - lo > SAMPLED_SPAN:
            return None
        probe = lo
        while probe <= hi + SAMPLE_STEP:
            if min(probe, hi).astimezone(self.tz).utcoffset() != offset:
                return None
            probe += SAMPLE_STEP
        return out

    def between(self, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
        """Every fire instant in (start, end]."""
        out: list[dt.datetime] = []
        cursor = start
        while True:
            batch = self.next_after(cursor, 64)
            for inst in batch:
                if inst > end:
                    return out
                out.append(inst)
            if not batch:
                return out
            cursor = batch[-1]
