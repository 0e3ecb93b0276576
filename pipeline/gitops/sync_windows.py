"""Argo CD sync windows of an env's Application: may a sync run now, and if not, why and until when.

Each rule mirrors the Argo CD source it names (argoproj/argo-cd at 37ee009; line numbers of that commit):

- which windows apply to the Application: pkg/apis/application/v1alpha1/types.go:3106 `SyncWindows.Matches`
  (applications, then clusters = destination.name or .server, then namespaces; OR, or AND with `andOperator`,
  where an empty list is no constraint and a window with none matches nothing), each pattern through
  app_project_types.go:446 `globMatch` (`*` matches all) → util/glob/glob.go:90 `Match` (gobwas/glob v0.2.3,
  no separators; a pattern that does not compile logs and matches nothing);
- whether a window is active: types.go:3378 `SyncWindow.active` (and :2967 `SyncWindows.active`): with `off` =
  the window zone's UTC offset at the moment of evaluation (:3041 `scheduleOffsetByTimeZone`: one fixed
  offset, UTC with a warning for an unknown zone) and `d` = `time.ParseDuration(duration)`, active iff
  `schedule.Next(now + off - d)` is strictly before `now + off`, the schedule parsed by
  `cron.NewParser(Minute | Hour | Dom | Month | Dow)` (robfig/cron v3: no seconds field, no `@descriptors`);
  no look-back cap, and a schedule with no occurrence within 5 years makes `Next` return Go's zero time,
  which is before every time: such a window is always active;
- whether a sync may run: types.go:3186 `SyncWindows.CanSync(isManual)`: a matching window that does not parse
  refuses every sync; an active deny refuses it unless it is manual and every active deny has `manualSync`
  (:3251 `hasDeny`); else an active allow permits it; else allow windows that exist (all inactive, :3006
  `inactiveAllows`) refuse it unless it is manual and every one of them has `manualSync` (:3285
  `manualEnabled`). The controller asks with isManual=false before an automated sync
  (controller/appcontroller.go:2002), the API server with isManual=true (server/application/application.go:2091
  `Sync`); syncOverrun only concerns an operation already running (controller/sync.go:727), not modelled here.

The cron code is a port of robfig/cron v3 (bc59245, the commit argo-cd's go.mod pins): parser.go:88 `Parse`,
:236 `getField`, :252 `getRange` and spec.go:58 `SpecSchedule.Next`, :179 `dayMatches`, over Go's
`time.Date`/`AddDate`/`Add`/`Truncate` semantics. It is hand-written because no Python library implements
robfig's semantics: croniter, the usual choice, accepts what this parser refuses (`7` for Sunday, `L`/`W`/`#`,
`@daily`, a seconds field) and has no 5-year bound with a zero-time result. Durations port Go's
`time.ParseDuration` (src/time/format.go), globs gobwas/glob's grammar (syntax/lexer, syntax/ast).
tests/rollback/test_sync_windows.py holds the conformance tables (robfig's own spec_test.go/parser_test.go
rows, Go's parseDurationTests, argo-cd's types_test.go rows).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from pipeline.gitops.repo import GitOpsError, GitOpsRepo, load_yaml_text

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_EPOCH_NAIVE = dt.datetime(1970, 1, 1)
# Go's zero time.Time (January 1, year 1, 00:00:00 UTC): what robfig's Next returns when nothing matches.
GO_ZERO_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
# Occurrences followed when walking a window's overlapping occurrences (its "since"/"until" labels only).
_CHAIN_LIMIT = 2000

# -- Go time.ParseDuration (src/time/format.go)

_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": _NS,
    "m": 60 * _NS,
    "h": 3600 * _NS,
}


def _go_quote(s: str) -> str:
    return '"' + s.encode().decode("ascii", "backslashreplace").replace('"', '\\"') + '"'


def parse_go_duration(text: str) -> int:
    """Go's `time.ParseDuration`, in nanoseconds: `[-+]?([0-9]*(\\.[0-9]*)?[a-z]+)+`, or "0"; ValueError as Go errs."""
    orig, s, neg = text, text, False
    invalid = ValueError(f"time: invalid duration {_go_quote(orig)}")
    if s and s[0] in "+-":
        neg, s = s[0] == "-", s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or "0" <= s[0] <= "9"):
            raise invalid
        i = 0
        v = 0
        while i < len(s) and "0" <= s[i] <= "9":  # leadingInt
            if v > (1 << 63) // 10:
                raise invalid
            v = v * 10 + ord(s[i]) - 48
            if v > 1 << 63:
                raise invalid
            i += 1
        pre, s = i > 0, s[i:]
        f, scale, post = 0, 1.0, False
        if s and s[0] == ".":
            s = s[1:]
            i, overflow = 0, False
            while i < len(s) and "0" <= s[i] <= "9":  # leadingFraction: stops accumulating on overflow
                if not overflow:
                    if f > ((1 << 63) - 1) // 10:
                        overflow = True
                    else:
                        y = f * 10 + ord(s[i]) - 48
                        if y > 1 << 63:
                            overflow = True
                        else:
                            f, scale = y, scale * 10
                i += 1
            post, s = i > 0, s[i:]
        if not pre and not post:
            raise invalid
        i = 0
        while i < len(s) and not (s[i] == "." or "0" <= s[i] <= "9"):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_go_quote(orig)}")
        u, s = s[:i], s[i:]
        if u not in _UNITS:
            raise ValueError(f"time: unknown unit {_go_quote(u)} in duration {_go_quote(orig)}")
        unit = _UNITS[u]
        if v > (1 << 63) // unit:
            raise invalid
        v *= unit
        if f > 0:
            v += int(float(f) * (float(unit) / scale))  # Go: uint64(float64(f) * (float64(unit) / scale))
            if v > 1 << 63:
                raise invalid
        total += v
        if total > 1 << 63:
            raise invalid
    if neg:
        return -total
    if total > (1 << 63) - 1:
        raise invalid
    return total


def parse_duration(text: str) -> dt.timedelta:
    """A sync window's `duration` as Argo CD reads it (Go `time.ParseDuration`), to the microsecond."""
    ns = parse_go_duration(text)
    return dt.timedelta(microseconds=ns // 1000 if ns >= 0 else -(-ns // 1000))


# -- robfig/cron v3: parser.go and spec.go

STAR_BIT = 1 << 63  # parser.go starBit: the field had a `*`/`?` (and no step > 1)
_MONTHS = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_DOWS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_BOUNDS: dict[str, tuple[int, int, Mapping[str, int] | None]] = {
    "minute": (0, 59, None),
    "hour": (0, 23, None),
    "dom": (1, 31, None),
    "month": (1, 12, _MONTHS),
    "dow": (0, 6, _DOWS),
}
# Go strings.Fields / strings.TrimSpace split on unicode.IsSpace (Unicode White_Space), not Python's str.split set.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_GO_FIELDS = re.compile(f"[{re.escape(_GO_SPACE)}]+")
_ATOI = re.compile(r"[+-]?[0-9]+")


def _atoi(expr: str) -> int:
    """Go `strconv.Atoi` then robfig `mustParseInt` (no negatives)."""
    if not _ATOI.fullmatch(expr):
        raise ValueError(f'failed to parse int from {expr}: strconv.Atoi: parsing "{expr}": invalid syntax')
    num = int(expr)
    if not -(1 << 63) <= num < 1 << 63:
        raise ValueError(f'failed to parse int from {expr}: strconv.Atoi: parsing "{expr}": value out of range')
    if num < 0:
        raise ValueError(f"negative number ({num}) not allowed: {expr}")
    return num


def _int_or_name(expr: str, names: Mapping[str, int] | None) -> int:
    if names is not None and expr.lower() in names:
        return names[expr.lower()]
    return _atoi(expr)


def _range_bits(expr: str, lo: int, hi: int, names: Mapping[str, int] | None) -> int:
    """robfig parser.go `getRange`: `number | number "-" number [ "/" number ]`, `*`/`?` with optional step."""
    range_and_step = expr.split("/")
    low_and_high = range_and_step[0].split("-")
    single = len(low_and_high) == 1
    extra = 0
    if low_and_high[0] in ("*", "?"):
        start, end, extra = lo, hi, STAR_BIT
    else:
        start = _int_or_name(low_and_high[0], names)
        if len(low_and_high) == 1:
            end = start
        elif len(low_and_high) == 2:
            end = _int_or_name(low_and_high[1], names)
        else:
            raise ValueError(f"too many hyphens: {expr}")
    if len(range_and_step) == 1:
        step = 1
    elif len(range_and_step) == 2:
        step = _atoi(range_and_step[1])
        if single:  # "N/step" means "N-max/step"
            end = hi
        if step > 1:  # a stepped star is a restriction: no star bit (robfig #70)
            extra = 0
    else:
        raise ValueError(f"too many slashes: {expr}")
    if start < lo:
        raise ValueError(f"beginning of range ({start}) below minimum ({lo}): {expr}")
    if end > hi:
        raise ValueError(f"end of range ({end}) above maximum ({hi}): {expr}")
    if start > end:
        raise ValueError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise ValueError(f"step of range should be a positive number: {expr}")
    bits = 0
    for i in range(start, end + 1, step):
        bits |= 1 << i
    return bits | extra


def cron_field_bits(field: str, lo: int, hi: int, names: Mapping[str, int] | None = None) -> int:
    """robfig parser.go `getField`: the bit set of a comma-separated list of ranges (empty items are skipped)."""
    bits = 0
    for expr in (part for part in field.split(",") if part):
        bits |= _range_bits(expr, lo, hi, names)
    return bits


@dataclass(frozen=True)
class CronSchedule:
    """robfig spec.go `SpecSchedule` (Second is always 0: Argo CD's parser has no seconds field)."""

    minute: int
    hour: int
    dom: int
    month: int
    dow: int
    # A `TZ=`/`CRON_TZ=` prefix; None = time.Local, i.e. the location of the time given to `next`.
    location: dt.tzinfo | None = None
    second: int = 1


def _load_location(name: str) -> dt.tzinfo | None:
    """Go `time.LoadLocation` for a cron prefix: "" and "UTC" are UTC, "Local" is time.Local (None)."""
    if name in ("", "UTC"):
        return dt.UTC
    if name == "Local":
        return None
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"provided bad location {name}: unknown time zone {name}") from exc


def parse_cron(spec: str) -> CronSchedule:
    """`cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow).Parse(spec)` as Argo CD calls it."""
    if not spec:
        raise ValueError("empty spec string")
    location: dt.tzinfo | None = None
    if spec.startswith(("TZ=", "CRON_TZ=")):
        i, eq = spec.find(" "), spec.find("=")
        if i < 0:  # robfig slices spec[eq+1:-1] and panics
            raise ValueError(f"robfig/cron panics on a time zone prefix without a schedule after it: {spec}")
        location = _load_location(spec[eq + 1 : i])
        spec = spec[i:].strip(_GO_SPACE)  # strings.TrimSpace
    if spec.startswith("@"):
        raise ValueError(f"parser does not accept descriptors: {spec}")
    fields = [f for f in _GO_FIELDS.split(spec) if f]
    if len(fields) != 5:
        raise ValueError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    minute, hour, dom, month, dow = (
        cron_field_bits(f, *_BOUNDS[k]) for f, k in zip(fields, ("minute", "hour", "dom", "month", "dow"), strict=True)
    )
    return CronSchedule(minute, hour, dom, month, dow, location)


# Go time arithmetic on (unix seconds, location): the operations SpecSchedule.Next uses.


def _wall(u: int, loc: dt.tzinfo) -> dt.datetime:
    if loc is dt.UTC:
        return _EPOCH + dt.timedelta(seconds=u)
    return dt.datetime.fromtimestamp(u, loc)


def _offset(u: int, loc: dt.tzinfo) -> int:
    off = _wall(u, loc).utcoffset()
    return int(off.total_seconds()) if off else 0


def _go_date(year: int, month: int, day: int, hour: int, minute: int, second: int, loc: dt.tzinfo) -> int:
    """Go `time.Date`: normalises overflowing fields; a wall time in a gap or overlap resolves as Go does."""
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    naive = dt.datetime(year, month, 1) + dt.timedelta(days=day - 1, hours=hour, minutes=minute, seconds=second)
    u = (naive - _EPOCH_NAIVE) // dt.timedelta(seconds=1)
    off = _offset(u, loc)
    if off:  # Go looks the offset up at u, then again at u - offset when that falls in another zone period
        u -= _offset(u - off, loc)
    return u


def _day_matches(s: CronSchedule, w: dt.datetime) -> bool:
    """spec.go `dayMatches`: both day fields must match if either has the star bit, else one of them."""
    dom_match = bool((1 << w.day) & s.dom)
    dow_match = bool((1 << (w.isoweekday() % 7)) & s.dow)
    if s.dom & STAR_BIT or s.dow & STAR_BIT:
        return dom_match and dow_match
    return dom_match or dow_match


def _next(s: CronSchedule, t_ns: int, loc: dt.tzinfo) -> int | None:
    """spec.go `SpecSchedule.Next`: the first activation strictly after instant `t_ns` (Unix seconds), None for
    Go's zero time (nothing within five years). `loc` is the location of the given time."""
    if s.location is not None:
        loc = s.location
    if not (s.minute & ~STAR_BIT and s.hour & ~STAR_BIT and s.month & ~STAR_BIT and s.second):
        return None  # a field that matches nothing: robfig searches five years in vain
    u = t_ns // _NS + 1  # t.Add(1*time.Second - time.Duration(t.Nanosecond()))
    added = False
    year_limit = _wall(u, loc).year + 5
    while True:  # WRAP
        w = _wall(u, loc)
        if w.year > year_limit:
            return None
        wrapped = False
        while not (1 << w.month) & s.month:
            if not added:
                added = True
                u = _go_date(w.year, w.month, 1, 0, 0, 0, loc)
                w = _wall(u, loc)
            u = _go_date(w.year, w.month + 1, w.day, w.hour, w.minute, w.second, loc)  # AddDate(0, 1, 0)
            w = _wall(u, loc)
            if w.month == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not _day_matches(s, w):
            if not added:
                added = True
                u = _go_date(w.year, w.month, w.day, 0, 0, 0, loc)
                w = _wall(u, loc)
            u = _go_date(w.year, w.month, w.day + 1, w.hour, w.minute, w.second, loc)  # AddDate(0, 0, 1)
            w = _wall(u, loc)
            if w.hour != 0:  # midnight did not exist (DST): back to it, or on to the next one
                u += (24 - w.hour) * 3600 if w.hour > 12 else -w.hour * 3600
                w = _wall(u, loc)
            if w.day == 1:
                wrapped = True
                break
        if wrapped:
            continue
        while not (1 << w.hour) & s.hour:
            if not added:
                added = True
                u = _go_date(w.year, w.month, w.day, w.hour, 0, 0, loc)
                w = _wall(u, loc)
            u += 3600
            w = _wall(u, loc)
            if w.hour == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while not (1 << w.minute) & s.minute:
            if not added:
                added = True
                u -= u % 60  # t.Truncate(time.Minute): absolute, not wall-clock
            u += 60
            w = _wall(u, loc)
            if w.minute == 0:
                wrapped = True
                break
        if wrapped:
            continue
        while not (1 << w.second) & s.second:
            added = True
            u += 1
            w = _wall(u, loc)
            if w.second == 0:
                wrapped = True
                break
        if wrapped:
            continue
        return u


def _ns_of(t: dt.datetime) -> int:
    if t.tzinfo is None:
        raise ValueError(f"a naive datetime has no instant: {t!r}")
    return (t - _EPOCH) // dt.timedelta(microseconds=1) * 1000


def _datetime_of(ns: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def cron_next(spec: str | CronSchedule, t: dt.datetime) -> dt.datetime | None:
    """robfig `Schedule.Next(t)` for Argo CD's parser, in t's time zone; None where robfig returns the zero time."""
    sched = parse_cron(spec) if isinstance(spec, str) else spec
    loc = t.tzinfo
    if loc is None:
        raise ValueError(f"a naive datetime has no time zone: {t!r}")
    u = _next(sched, _ns_of(t), loc)
    return None if u is None else _datetime_of(u * _NS).astimezone(loc)


def cron_matches(expr: str, t: dt.datetime) -> bool:
    """Whether the minute of `t` is an activation of `expr` (robfig spec_test.go TestActivation: Next(t - 1s) == t)."""
    start = t.replace(second=0, microsecond=0)
    got = cron_next(expr, start - dt.timedelta(seconds=1))
    return got is not None and _ns_of(got) == _ns_of(start)  # instants: `==` across zones is False in a fold


# -- gobwas/glob v0.2.3 (syntax/lexer, syntax/ast) without separators, as util/glob.Match calls it


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile a gobwas/glob pattern to an equivalent regex; ValueError where gobwas fails to compile it."""
    pos, n = 0, len(pattern)
    frames: list[list[list[str]]] = [[[]]]  # per open `{`: its alternatives, each a list of regex parts

    def emit(part: str) -> None:
        frames[-1][-1].append(part)

    def text(breakers: str) -> str:
        nonlocal pos
        data, escaped = [], False
        while pos < n:
            r = pattern[pos]
            pos += 1
            if not escaped:
                if r == "\\":
                    escaped = True
                    continue
                if r in breakers:
                    pos -= 1
                    break
            escaped = False
            data.append(r)
        return "".join(data)

    while pos < n:
        r = pattern[pos]
        pos += 1
        if r == "{":
            frames.append([[]])
        elif r == "," and len(frames) > 1:
            frames[-1].append([])
        elif r == "}" and len(frames) > 1:
            alts = frames.pop()
            emit("(?:" + "|".join("".join(a) for a in alts) + ")")
        elif r == "[":
            negate, lo, hi, chars = False, "", "", ""
            want_hi = want_close = False
            while True:
                if pos >= n:
                    raise ValueError("unexpected end of input")
                r = pattern[pos]
                pos += 1
                if want_close:
                    if r != "]":
                        raise ValueError("expected close range character")
                    break
                if want_hi:
                    hi, want_close = r, True
                    continue
                if not negate and r == "!":
                    negate = True
                    continue
                if pos < n and pattern[pos] == "-":
                    pos += 1
                    lo, want_hi = r, True
                    continue
                pos -= 1
                chars = text("]")
                want_close = True
            if hi and hi < lo:
                raise ValueError(f"hi character '{hi}' should be greater than lo '{lo}'")
            if bool(chars) == bool(lo and hi):
                raise ValueError("could not parse range")
            body = f"{re.escape(lo)}-{re.escape(hi)}" if lo and hi else "".join(re.escape(c) for c in chars)
            emit(f"[{'^' if negate else ''}{body}]")
        elif r == "?":
            emit(".")
        elif r == "*":
            if pos < n and pattern[pos] == "*":
                pos += 1
            emit(".*")  # no separators: `*` and `**` both match any sequence
        else:
            pos -= 1
            breakers = "?*[{}," if len(frames) > 1 else "?*[{"
            emit(re.escape(text(breakers)))
    while len(frames) > 1:  # an unclosed `{` ends with the pattern (the parser does not refuse it)
        alts = frames.pop()
        emit("(?:" + "|".join("".join(a) for a in alts) + ")")
    return re.compile("".join(frames[0][0]), re.DOTALL)


def glob_match(pattern: str, text: str) -> bool:
    """Argo CD `globMatch(pattern, val, false)`: `*` matches all; else util/glob `glob.Match` (no separators),
    which logs and answers false for a pattern gobwas cannot compile."""
    if pattern == "*":
        return True
    try:
        rx = _glob_regex(pattern)
    except ValueError as exc:
        log.warning("failed to compile pattern %s due to error %s", pattern, exc)
        return False
    return rx.fullmatch(text) is not None


# -- Argo CD SyncWindow / SyncWindows


@dataclass(frozen=True)
class AppIdentity:
    """What `SyncWindows.Matches` reads of an Application: its name and spec.destination (and its project)."""

    name: str
    namespace: str
    server: str = ""
    cluster_name: str = ""
    project: str | None = None


def _str_list(window: Mapping[str, Any], key: str) -> list[str]:
    value = window.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of strings, not {value!r}")
    return value


def window_matches(window: Mapping[str, Any], app: AppIdentity) -> bool:
    """Argo CD `SyncWindows.Matches` for one window: OR over the set selectors, or AND with `andOperator: true`
    (where an unset list is no constraint); a window that sets none of them matches nothing."""
    use_and = window.get("andOperator") is True
    matched = is_set = False
    apps = _str_list(window, "applications")
    if apps:
        is_set = True
        matched = any(glob_match(a, app.name) for a in apps)
    if use_and and not matched and is_set:
        return False
    if not use_and and matched:
        return True
    clusters = _str_list(window, "clusters")
    if clusters:
        is_set = True
        matched = any(
            (app.cluster_name != "" and glob_match(c, app.cluster_name))
            or (app.server != "" and glob_match(c, app.server))
            for c in clusters
        )
    if is_set and use_and and not matched:
        return False
    if not use_and and matched:
        return True
    namespaces = _str_list(window, "namespaces")
    if namespaces:
        matched = any(glob_match(ns, app.namespace) for ns in namespaces)
    return matched


def _zone(name: str) -> dt.tzinfo:
    """`scheduleOffsetByTimeZone`'s location: Go `time.LoadLocation`, UTC (with Argo CD's warning) if unknown.
    "Local" is the controller's zone, UTC in Argo CD's image."""
    if name in ("", "UTC", "Local"):
        return dt.UTC
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):
        log.warning("Invalid time zone %s specified. Using UTC as default time zone", name)
        return dt.UTC


def _field(window: Mapping[str, Any], key: str) -> str:
    value = window.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def window_label(window: Mapping[str, Any]) -> str:
    """How a window is named in holds and policy input: `deny '0 18 * * 5' for 60h (UTC)`."""
    return f"{window.get('kind')} '{window.get('schedule')}' for {window.get('duration')} ({window.get('timeZone') or 'UTC'})"


@dataclass(frozen=True)
class _Window:
    kind: str
    schedule: CronSchedule
    duration_ns: int
    zone: dt.tzinfo
    manual: bool
    label: str


def _parse_window(window: Mapping[str, Any]) -> _Window:
    """The parse `SyncWindows.active` does: errors read as Argo CD's ("cannot parse schedule '…': …")."""
    schedule, duration = _field(window, "schedule"), _field(window, "duration")
    try:
        sched = parse_cron(schedule)
    except ValueError as exc:
        raise ValueError(f"cannot parse schedule '{schedule}': {exc}") from exc
    try:
        ns = parse_go_duration(duration)
    except ValueError as exc:
        raise ValueError(f"cannot parse duration '{duration}': {exc}") from exc
    zone = _zone(_field(window, "timeZone"))
    return _Window(str(window.get("kind")), sched, ns, zone, window.get("manualSync") is True, window_label(window))


@dataclass(frozen=True)
class _Activity:
    since: dt.datetime  # GO_ZERO_TIME: the schedule has no occurrence (always active)
    ends: dt.datetime | None  # None: never
    ends_capped: bool


def _shift(w: _Window, now: dt.datetime) -> tuple[int, int]:
    """`currentTime.Add(timeZoneOffsetDuration)`: now (ns) moved by the zone's UTC offset at now, and the offset (s)."""
    off = now.astimezone(w.zone).utcoffset()
    off_s = int(off.total_seconds()) if off else 0
    return _ns_of(now) + off_s * _NS, off_s


def _unshift(x_ns: int, w: _Window, off_s: int) -> dt.datetime:
    """The UTC instant at which a shifted time `x_ns` is reached, with the offset in force then."""
    guess = x_ns - off_s * _NS
    return _datetime_of(x_ns - _offset(guess // _NS, w.zone) * _NS)


def _activity(w: _Window, now: dt.datetime) -> _Activity | None:
    """`SyncWindow.active` at `now`, and if active since/until when (overlapping occurrences joined)."""
    shifted, off_s = _shift(w, now)
    first = _next(w.schedule, shifted - w.duration_ns, dt.UTC)
    if first is None:
        return _Activity(GO_ZERO_TIME, None, False)
    if not first * _NS < shifted:
        return None
    start = first
    for _ in range(_CHAIN_LIMIT):
        earlier = _next(w.schedule, start * _NS - w.duration_ns, dt.UTC)
        if earlier is None or earlier >= start:
            break
        start = earlier
    last, end, capped = first, first * _NS + w.duration_ns, True
    for _ in range(_CHAIN_LIMIT):
        later = _next(w.schedule, last * _NS, dt.UTC)
        if later is None or later * _NS >= end:
            capped = False
            break
        last, end = later, later * _NS + w.duration_ns
    return _Activity(_unshift(start * _NS, w, off_s), _unshift(end, w, off_s), capped)


def _active(w: _Window, now: dt.datetime) -> bool:
    shifted, _ = _shift(w, now)
    first = _next(w.schedule, shifted - w.duration_ns, dt.UTC)
    return first is None or first * _NS < shifted


def window_active(window: Mapping[str, Any], now: dt.datetime) -> bool:
    """Argo CD `SyncWindow.active(now)`; ValueError (Argo CD's message) if the schedule or duration does not parse."""
    return _active(_parse_window(window), now)


def window_start(window: Mapping[str, Any], now: dt.datetime) -> dt.datetime | None:
    """When the window's current active stretch began (UTC), None if it is inactive at `now`.

    GO_ZERO_TIME for a schedule with no occurrence within five years (Argo CD counts it active for good).
    """
    act = _activity(_parse_window(window), now)
    return None if act is None else act.since


def _when(t: dt.datetime | None, capped: bool = False) -> str:
    if t is None:
        return "never"
    if t == GO_ZERO_TIME:
        return "always (the schedule has no occurrence within 5 years: Argo CD counts the window active)"
    return t.astimezone(dt.UTC).strftime("%a %Y-%m-%d %H:%M UTC") + (" or later" if capped else "")


# -- the env's Application and its AppProject in the GitOps repo


def _docs(repo: GitOpsRepo, rel_dir: str) -> Iterable[Mapping[str, Any]]:
    base = repo.file(rel_dir)
    if not base.is_dir():
        return
    for path in sorted(base.rglob("*.y*ml")):
        text = path.read_text()
        for chunk in re.split(r"^---\s*$", text, flags=re.M):
            if not chunk.strip():
                continue
            try:
                doc = load_yaml_text(chunk, str(path.relative_to(repo.path)))
            except GitOpsError:
                log.warning("skipping unparsable %s while reading sync windows", path.name)
                continue
            if isinstance(doc, Mapping):
                yield doc


def _app_identity(repo: GitOpsRepo, env: str) -> AppIdentity:
    """The Application the ApplicationSet template generates for `env`: name, destination, project."""

    def subst(s: object) -> str:
        from pipeline.checks.validate import render_go_template

        try:  # the goTemplate subset render validates (a per-env `get (dict ...)` destination too)
            return render_go_template(str(s), {"path": {"basename": env, "path": f"environments/{env}"}})
        except (KeyError, ValueError):
            pass
        s = re.sub(r"\{\{\s*\.path\.basename\s*\}\}", env, str(s))
        return re.sub(r"\{\{\s*\.path\.path\s*\}\}", f"environments/{env}", s)

    found: list[AppIdentity] = []
    for doc in _docs(repo, "environments/argocd"):
        if doc.get("kind") != "ApplicationSet":
            continue
        tmpl = (doc.get("spec") or {}).get("template") or {}
        spec = tmpl.get("spec") or {}
        dest = spec.get("destination") or {}
        name = (tmpl.get("metadata") or {}).get("name")
        if not name:
            continue
        found.append(
            AppIdentity(
                name=subst(name),
                namespace=subst(dest.get("namespace") or ""),
                server=subst(dest.get("server") or ""),
                cluster_name=subst(dest.get("name") or ""),
                project=subst(spec["project"]) if spec.get("project") else None,
            )
        )
    if len(found) > 1:
        log.warning("%d ApplicationSets in environments/argocd; sync windows follow the first", len(found))
    if found:
        return found[0]
    log.warning("no ApplicationSet template in environments/argocd; assuming Application llm-service-%s", env)
    from pipeline.core.environments import namespace_for

    return AppIdentity(name=f"llm-service-{env}", namespace=namespace_for(env))


@dataclass(frozen=True)
class _Matched:
    window: _Window
    active: bool


def _evaluate(windows: Iterable[Mapping[str, Any]], now: dt.datetime) -> tuple[list[_Matched], list[str]]:
    """Each window parsed and evaluated (`SyncWindows.active`), and the errors of those that do not parse."""
    matched: list[_Matched] = []
    invalid: list[str] = []
    for raw in windows:
        try:
            w = _parse_window(raw)
        except ValueError as exc:
            invalid.append(f"{window_label(raw)}: {exc}")
            continue
        matched.append(_Matched(w, _active(w, now)))
    return matched, invalid


def _until(m: _Matched, now: dt.datetime) -> tuple[int, str]:
    """An active window's end (ns, for ordering) and "<window> until <time>"."""
    act = _activity(m.window, now)
    ends = None if act is None else act.ends
    key = 1 << 80 if ends is None else _ns_of(ends)
    return key, f"{m.window.label} until {_when(ends, act is not None and act.ends_capped)}"


def can_sync(windows: Iterable[Mapping[str, Any]], now: dt.datetime, *, manual: bool) -> str | None:
    """Argo CD `SyncWindows.CanSync(isManual)` over the windows that match an Application: None if a sync may
    run now, else why not: each blocking deny ("<window> until <time>", "; "-joined), "outside every allow
    window (…)" or "invalid sync window …"."""
    matched, invalid = _evaluate(windows, now)
    if invalid:
        return f"invalid sync window {'; '.join(invalid)}"
    denies = [m for m in matched if m.window.kind == "deny" and m.active]
    if denies:
        if manual and all(m.window.manual for m in denies):
            return None
        # Every deny that blocks, the last to end last: the sync waits for all of them.
        blocking = sorted(_until(m, now) for m in denies if not (manual and m.window.manual))
        return "; ".join(dict.fromkeys(text for _, text in blocking))
    allows = [m for m in matched if m.window.kind == "allow"]
    if any(m.active for m in allows):
        return None
    if allows:
        if manual and all(m.window.manual for m in allows):
            return None
        return f"outside every allow window ({'; '.join(m.window.label for m in allows)})"
    return None


def matching_windows(repo: GitOpsRepo, env: str) -> list[Mapping[str, Any]]:
    """The sync windows of the Application's AppProject that apply to it (`SyncWindows.Matches`).

    GitOpsError for selectors that are not lists of strings (Argo CD could not even read the AppProject).
    """
    app = _app_identity(repo, env)
    out: list[Mapping[str, Any]] = []
    for doc in _docs(repo, "environments/argocd"):
        if doc.get("kind") != "AppProject":
            continue
        if app.project is not None and (doc.get("metadata") or {}).get("name") != app.project:
            continue
        for raw in (doc.get("spec") or {}).get("syncWindows") or []:
            try:
                if window_matches(raw, app):
                    out.append(raw)
            except ValueError as exc:
                raise GitOpsError(f"AppProject {app.project or ''}: sync window {window_label(raw)}: {exc}") from exc
    return out


def sync_windows(repo: GitOpsRepo, env: str, now: dt.datetime) -> dict[str, Any]:
    """Which AppProject sync windows apply to `env`'s Application and which are active now (policy input).

    A matching window that does not parse is a GitOpsError: Argo CD refuses every sync of the Application then.
    """
    matched, invalid = _evaluate(matching_windows(repo, env), now)
    if invalid:
        raise GitOpsError(
            f"invalid sync window {'; '.join(invalid)}: Argo CD refuses every sync of <{env}>, automated or manual"
        )
    out: dict[str, Any] = {"active_deny": [], "active_allow": [], "allow_defined": False, "allow_windows": []}
    for m in matched:
        w = m.window
        if w.kind == "allow":
            out["allow_defined"] = True
            out["allow_windows"].append(w.label)
            if m.active:
                out["active_allow"].append(w.label)
        elif w.kind == "deny" and m.active:
            act = _activity(w, now)
            assert act is not None
            out["active_deny"].append(
                {
                    "window": w.label,
                    "since": _when(act.since),
                    "ends": _when(act.ends, act.ends_capped),
                    "manual_sync": w.manual,
                }
            )
    return out


def sync_hold(repo: GitOpsRepo, env: str, now: dt.datetime, *, manual: bool) -> str | None:
    """Why Argo CD would not sync `env` now ("<window> until <time>"), or None if a sync may run (`can_sync`).

    `manual` = a sync requested through the API/CLI (isManual=true, as the API server's `Sync` asks); otherwise
    the automated sync of the Application's syncPolicy (the controller's isManual=false).
    """
    return can_sync(matching_windows(repo, env), now, manual=manual)
