"""Conformance tables for pipeline/gitops/sync_windows.py against the upstream code it ports.

Each table names the upstream function and test it mirrors; each row's id names its origin:
- robfig/cron v3 at bc59245 (the version argo-cd's go.mod pins): parser.go, spec.go; rows from spec_test.go
  (TestActivation, TestNext, TestNextWithTz, TestErrors, TestSlash0NoHang) and parser_test.go (TestRange,
  TestField, TestAll, TestParseScheduleErrors, TestStandardSpecSchedule, TestNoDescriptorParser). Their 6-field
  rows (secondParser) appear with the seconds field "0" dropped; rows with other seconds are left out (Argo CD's
  parser has no seconds field).
- Go src/time/format.go ParseDuration; rows from src/time/time_test.go parseDurationTests/parseDurationErrorTests.
- argo-cd pkg/apis/application/v1alpha1/types.go (SyncWindow.active, SyncWindows.Matches, SyncWindows.CanSync,
  scheduleOffsetByTimeZone); rows from types_test.go (TestSyncWindow_Active, TestSyncWindows_Active,
  TestSyncWindows_Matches[_AND_Operator], TestSyncWindows_CanSync, TestSyncWindow_Validate).
- Rows whose id names a function (getRange:, Next:, Matches:, gobwas:, CanSync:, active:, tz:, …) rather than an
  upstream test pin behaviour read from that function (file and line refs in the module's docstring).
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.gitops.repo import GitOpsError, GitOpsRepo, dump_yaml
from pipeline.gitops.sync_windows import (
    STAR_BIT,
    AppIdentity,
    can_sync,
    cron_field_bits,
    cron_matches,
    cron_next,
    glob_match,
    parse_cron,
    parse_duration,
    parse_go_duration,
    sync_hold,
    sync_windows,
    window_active,
    window_matches,
    window_start,
)

REPO = Path(__file__).resolve().parents[2]
UTC = dt.UTC
P = pytest.param


def rt(value: str) -> dt.datetime:
    """robfig spec_test.go getTime/getTimeTZ: "Mon Jul 9 15:00 2012" (time.Local, UTC here), an ISO time with
    offset, or "TZ=<zone> <ISO>" (that time in the zone)."""
    zone = None
    if value.startswith("TZ="):
        name, value = value.split()
        zone = ZoneInfo(name[3:])
    for fmt in ("%a %b %d %H:%M %Y", "%a %b %d %H:%M:%S %Y"):
        try:
            return dt.datetime.strptime(value, fmt).replace(tzinfo=zone or UTC)
        except ValueError:
            pass
    t = dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S%z")
    return t.astimezone(zone) if zone else t


# -- robfig/cron: spec_test.go TestActivation (Next(t - 1s) == t), through Argo CD's 5-field parser

ACTIVATION = [
    P("0/15 * * * *", "Mon Jul 9 15:00 2012", True, id="TestActivation:0/15@15:00"),
    P("0/15 * * * *", "Mon Jul 9 15:45 2012", True, id="TestActivation:0/15@15:45"),
    P("0/15 * * * *", "Mon Jul 9 15:40 2012", False, id="TestActivation:0/15@15:40"),
    P("5/15 * * * *", "Mon Jul 9 15:05 2012", True, id="TestActivation:5/15@15:05"),
    P("5/15 * * * *", "Mon Jul 9 15:20 2012", True, id="TestActivation:5/15@15:20"),
    P("5/15 * * * *", "Mon Jul 9 15:50 2012", True, id="TestActivation:5/15@15:50"),
    P("0/15 * * Jul *", "Sun Jul 15 15:00 2012", True, id="TestActivation:named-month-Jul"),
    P("0/15 * * Jun *", "Sun Jul 15 15:00 2012", False, id="TestActivation:named-month-Jun"),
    P("30 08 ? Jul Sun", "Sun Jul 15 08:30 2012", True, id="TestActivation:?-dom-Sun"),
    P("30 08 15 Jul ?", "Sun Jul 15 08:30 2012", True, id="TestActivation:?-dow-15"),
    P("30 08 ? Jul Sun", "Mon Jul 16 08:30 2012", False, id="TestActivation:?-dom-Mon"),
    P("30 08 15 Jul ?", "Mon Jul 16 08:30 2012", False, id="TestActivation:?-dow-16"),
    P("* * 1,15 * Sun", "Sun Jul 15 00:00 2012", True, id="TestActivation:dom-or-dow-both"),
    P("* * 1,15 * Sun", "Fri Jun 15 00:00 2012", True, id="TestActivation:dom-or-dow-dom"),
    P("* * 1,15 * Sun", "Wed Aug 1 00:00 2012", True, id="TestActivation:dom-or-dow-dom1"),
    P("* * */10 * Sun", "Sun Jul 15 00:00 2012", True, id="TestActivation:*/10-is-restricted-#70"),
    P("* * * * Mon", "Sun Jul 15 00:00 2012", False, id="TestActivation:star-dom-and-dow"),
    P("* * 1,15 * *", "Mon Jul 9 00:00 2012", False, id="TestActivation:star-dow-and-dom"),
    P("* * 1,15 * *", "Sun Jul 15 00:00 2012", True, id="TestActivation:star-dow-15"),
    P("* * */2 * Sun", "Sun Jul 15 00:00 2012", True, id="TestActivation:*/2-dom-Sun"),
    # parser.go getRange: `*/n` with n > 1 clears the star bit, so a stepped dom with a restricted dow is OR'ed
    # (Mon 2026-11-30: day 30 is not in */2 = 1,3,…,31, but it is a Monday).
    P("0 0 */2 * MON", "Mon Nov 30 00:00 2026", True, id="getRange:*/2-dom-restricted-dow-OR"),
    # ...while `*/1` keeps the star bit: both must match (Tue 2026-12-01 is no Monday).
    P("0 0 */1 * MON", "Tue Dec 1 00:00 2026", False, id="getRange:*/1-keeps-star-bit-AND"),
    P("0 0 ? * MON", "Tue Dec 1 00:00 2026", False, id="getRange:?-is-a-star"),
    # spec.go bounds names, parser.go parseIntOrName: names in any case, ranges of names.
    P("0 0 * * sUn", "Sun Nov 29 00:00 2026", True, id="parseIntOrName:case-insensitive-dow"),
    P("0 0 * * MON-FRI", "Fri Nov 27 00:00 2026", True, id="parseIntOrName:MON-FRI-Fri"),
    P("0 0 * * MON-FRI", "Sat Nov 28 00:00 2026", False, id="parseIntOrName:MON-FRI-Sat"),
    P("0 0 1 jan-MAR *", "Sun Mar 1 00:00 2026", True, id="parseIntOrName:jan-MAR"),
    P("0 0 * * SAT/2", "Sat Nov 28 00:00 2026", True, id="getRange:N/step-is-N-max"),
    # parser.go getField: strings.FieldsFunc drops empty list items; strconv.Atoi takes a sign.
    P("0,,30 * * * *", "Wed Nov 25 10:30 2026", True, id="getField:empty-item-skipped"),
    P("+5 * * * *", "Wed Nov 25 10:05 2026", True, id="mustParseInt:Atoi-accepts-plus"),
    P("1-10/3 * * * *", "Wed Nov 25 10:07 2026", True, id="getRange:range-with-step-7"),
    P("1-10/3 * * * *", "Wed Nov 25 10:08 2026", False, id="getRange:range-with-step-8"),
]


@pytest.mark.parametrize(("spec", "at", "expected"), ACTIVATION)
def test_cron_activation(spec: str, at: str, expected: bool) -> None:
    assert cron_matches(spec, rt(at)) is expected


# -- robfig/cron: spec_test.go TestNext and TestNextWithTz (SpecSchedule.Next); None = Go's zero time

NEXT = [
    P("Mon Jul 9 14:45 2012", "0/15 * * * *", "Mon Jul 9 15:00 2012", id="TestNext:simple"),
    P("Mon Jul 9 14:59 2012", "0/15 * * * *", "Mon Jul 9 15:00 2012", id="TestNext:simple-14:59"),
    P("Mon Jul 9 14:59:59 2012", "0/15 * * * *", "Mon Jul 9 15:00 2012", id="TestNext:simple-14:59:59"),
    P("Mon Jul 9 15:45 2012", "20-35/15 * * * *", "Mon Jul 9 16:20 2012", id="TestNext:wrap-hours"),
    P("Mon Jul 9 23:46 2012", "*/15 * * * *", "Tue Jul 10 00:00 2012", id="TestNext:wrap-days"),
    P("Mon Jul 9 23:45 2012", "20-35/15 * * * *", "Tue Jul 10 00:20 2012", id="TestNext:wrap-days-range"),
    P("Mon Jul 9 23:35 2012", "0 0 9 Apr-Oct ?", "Thu Aug 9 00:00 2012", id="TestNext:wrap-months"),
    P("Mon Jul 9 23:35 2012", "0 0 */5 Apr,Aug,Oct Mon", "Tue Aug 1 00:00 2012", id="TestNext:*/5-or-Mon-#70"),
    P("Mon Jul 9 23:35 2012", "0 0 */5 Oct Mon", "Mon Oct 1 00:00 2012", id="TestNext:*/5-Oct-Mon"),
    P("Mon Jul 9 23:35 2012", "0 0 * Feb Mon", "Mon Feb 4 00:00 2013", id="TestNext:wrap-years"),
    P("Mon Jul 9 23:35 2012", "0 0 * Feb Mon/2", "Fri Feb 1 00:00 2013", id="TestNext:Mon/2"),
    P("Mon Dec 31 23:59:45 2012", "* * * * *", "Tue Jan 1 00:00:00 2013", id="TestNext:wrap-everything"),
    P("Mon Jul 9 23:35 2012", "0 0 29 Feb ?", "Mon Feb 29 00:00 2016", id="TestNext:leap-year"),
    P(
        "2012-03-11T00:00:00-0500",
        "TZ=America/New_York 30 2 11 Mar ?",
        "2013-03-11T02:30:00-0400",
        id="TestNext:DST-gap",
    ),
    P(
        "2012-03-11T00:00:00-0500",
        "TZ=America/New_York 0 * * * ?",
        "2012-03-11T01:00:00-0500",
        id="TestNext:NY-hourly-1",
    ),
    P(
        "2012-03-11T01:00:00-0500",
        "TZ=America/New_York 0 * * * ?",
        "2012-03-11T03:00:00-0400",
        id="TestNext:NY-hourly-2",
    ),
    P(
        "2012-03-11T03:00:00-0400",
        "TZ=America/New_York 0 * * * ?",
        "2012-03-11T04:00:00-0400",
        id="TestNext:NY-hourly-3",
    ),
    P(
        "2012-03-11T04:00:00-0400",
        "TZ=America/New_York 0 * * * ?",
        "2012-03-11T05:00:00-0400",
        id="TestNext:NY-hourly-4",
    ),
    P(
        "2012-03-11T00:00:00-0500",
        "CRON_TZ=America/New_York 0 * * * ?",
        "2012-03-11T01:00:00-0500",
        id="TestNext:CRON_TZ-1",
    ),
    P(
        "2012-03-11T01:00:00-0500",
        "CRON_TZ=America/New_York 0 * * * ?",
        "2012-03-11T03:00:00-0400",
        id="TestNext:CRON_TZ-2",
    ),
    P(
        "2012-03-11T03:00:00-0400",
        "CRON_TZ=America/New_York 0 * * * ?",
        "2012-03-11T04:00:00-0400",
        id="TestNext:CRON_TZ-3",
    ),
    P(
        "2012-03-11T04:00:00-0400",
        "CRON_TZ=America/New_York 0 * * * ?",
        "2012-03-11T05:00:00-0400",
        id="TestNext:CRON_TZ-4",
    ),
    P("2012-03-11T00:00:00-0500", "TZ=America/New_York 0 1 * * ?", "2012-03-11T01:00:00-0500", id="TestNext:1am-1"),
    P("2012-03-11T01:00:00-0500", "TZ=America/New_York 0 1 * * ?", "2012-03-12T01:00:00-0400", id="TestNext:1am-2"),
    P(
        "2012-03-11T00:00:00-0500",
        "TZ=America/New_York 0 2 * * ?",
        "2012-03-12T02:00:00-0400",
        id="TestNext:2am-skipped",
    ),
    P(
        "2012-11-04T00:00:00-0400",
        "TZ=America/New_York 30 2 04 Nov ?",
        "2012-11-04T02:30:00-0500",
        id="TestNext:DST-back",
    ),
    P(
        "2012-11-04T01:45:00-0400",
        "TZ=America/New_York 30 1 04 Nov ?",
        "2012-11-04T01:30:00-0500",
        id="TestNext:DST-back-1:30",
    ),
    P(
        "2012-11-04T00:00:00-0400",
        "TZ=America/New_York 0 * * * ?",
        "2012-11-04T01:00:00-0400",
        id="TestNext:back-hourly-1",
    ),
    P(
        "2012-11-04T01:00:00-0400",
        "TZ=America/New_York 0 * * * ?",
        "2012-11-04T01:00:00-0500",
        id="TestNext:back-hourly-2",
    ),
    P(
        "2012-11-04T01:00:00-0500",
        "TZ=America/New_York 0 * * * ?",
        "2012-11-04T02:00:00-0500",
        id="TestNext:back-hourly-3",
    ),
    P(
        "2012-11-04T00:00:00-0400",
        "TZ=America/New_York 0 1 * * ?",
        "2012-11-04T01:00:00-0400",
        id="TestNext:1am-twice-1",
    ),
    P(
        "2012-11-04T01:00:00-0400",
        "TZ=America/New_York 0 1 * * ?",
        "2012-11-04T01:00:00-0500",
        id="TestNext:1am-twice-2",
    ),
    P(
        "2012-11-04T01:00:00-0500",
        "TZ=America/New_York 0 1 * * ?",
        "2012-11-05T01:00:00-0500",
        id="TestNext:1am-twice-3",
    ),
    P(
        "2012-11-04T00:00:00-0400",
        "TZ=America/New_York 0 2 * * ?",
        "2012-11-04T02:00:00-0500",
        id="TestNext:back-2am-1",
    ),
    P(
        "2012-11-04T02:00:00-0500",
        "TZ=America/New_York 0 2 * * ?",
        "2012-11-05T02:00:00-0500",
        id="TestNext:back-2am-2",
    ),
    P(
        "2012-11-04T00:00:00-0400",
        "TZ=America/New_York 0 3 * * ?",
        "2012-11-04T03:00:00-0500",
        id="TestNext:back-3am-1",
    ),
    P(
        "2012-11-04T03:00:00-0500",
        "TZ=America/New_York 0 3 * * ?",
        "2012-11-05T03:00:00-0500",
        id="TestNext:back-3am-2",
    ),
    P(
        "TZ=America/New_York 2012-11-04T00:00:00-0400",
        "0 * * * ?",
        "2012-11-04T01:00:00-0400",
        id="TestNext:local-hourly-1",
    ),
    P(
        "TZ=America/New_York 2012-11-04T01:00:00-0400",
        "0 * * * ?",
        "2012-11-04T01:00:00-0500",
        id="TestNext:local-hourly-2",
    ),
    P(
        "TZ=America/New_York 2012-11-04T01:00:00-0500",
        "0 * * * ?",
        "2012-11-04T02:00:00-0500",
        id="TestNext:local-hourly-3",
    ),
    P(
        "TZ=America/New_York 2012-11-04T00:00:00-0400",
        "0 1 * * ?",
        "2012-11-04T01:00:00-0400",
        id="TestNext:local-1am-1",
    ),
    P(
        "TZ=America/New_York 2012-11-04T01:00:00-0400",
        "0 1 * * ?",
        "2012-11-04T01:00:00-0500",
        id="TestNext:local-1am-2",
    ),
    P(
        "TZ=America/New_York 2012-11-04T01:00:00-0500",
        "0 1 * * ?",
        "2012-11-05T01:00:00-0500",
        id="TestNext:local-1am-3",
    ),
    P(
        "TZ=America/New_York 2012-11-04T00:00:00-0400",
        "0 2 * * ?",
        "2012-11-04T02:00:00-0500",
        id="TestNext:local-2am-1",
    ),
    P(
        "TZ=America/New_York 2012-11-04T02:00:00-0500",
        "0 2 * * ?",
        "2012-11-05T02:00:00-0500",
        id="TestNext:local-2am-2",
    ),
    P(
        "TZ=America/New_York 2012-11-04T00:00:00-0400",
        "0 3 * * ?",
        "2012-11-04T03:00:00-0500",
        id="TestNext:local-3am-1",
    ),
    P(
        "TZ=America/New_York 2012-11-04T03:00:00-0500",
        "0 3 * * ?",
        "2012-11-05T03:00:00-0500",
        id="TestNext:local-3am-2",
    ),
    P("Mon Jul 9 23:35 2012", "0 0 30 Feb ?", None, id="TestNext:unsatisfiable-Feb-30"),
    P("Mon Jul 9 23:35 2012", "0 0 31 Apr ?", None, id="TestNext:unsatisfiable-Apr-31"),
    P("TZ=America/New_York 2012-11-04T00:00:00-0400", "0 3 3 * ?", "2012-12-03T03:00:00-0500", id="TestNext:monthly"),
    P(
        "2018-10-17T05:00:00-0400",
        "TZ=America/Sao_Paulo 0 9 10 * ?",
        "2018-11-10T06:00:00-0500",
        id="TestNext:no-midnight-#157-1",
    ),
    P(
        "2018-02-14T05:00:00-0500",
        "TZ=America/Sao_Paulo 0 9 22 * ?",
        "2018-02-22T07:00:00-0500",
        id="TestNext:no-midnight-#157-2",
    ),
    P("2016-01-03T13:09:03+0530", "14 14 * * *", "2016-01-03T14:14:00+0530", id="TestNextWithTz-1"),
    P("2016-01-03T04:09:03+0530", "14 14 * * ?", "2016-01-03T14:14:00+0530", id="TestNextWithTz-2"),
    P("2016-01-03T14:09:03+0530", "14 14 * * *", "2016-01-03T14:14:00+0530", id="TestNextWithTz-3"),
    P("2016-01-03T14:00:00+0530", "14 14 * * ?", "2016-01-03T14:14:00+0530", id="TestNextWithTz-4"),
    # spec.go Next: the search stops five years after t (yearLimit), so a schedule only met later is "none".
    # (2100 is no leap year: from 2097 the next Feb 29, in 2104, is past 2097 + 5; from 2099 it is not.)
    P("Tue Jan 1 00:00 2097", "0 0 29 Feb *", None, id="Next:yearLimit-2104-too-far"),
    P("Thu Jan 1 00:00 2099", "0 0 29 Feb *", "Fri Feb 29 00:00 2104", id="Next:yearLimit-2104-found"),
]


@pytest.mark.parametrize(("at", "spec", "expected"), NEXT)
def test_cron_next(at: str, spec: str, expected: str | None) -> None:
    got = cron_next(spec, rt(at))
    # Instants (Go's Equal): Python's `==` between zones is False for a wall time in a DST fold.
    assert (got and got.timestamp()) == (expected and rt(expected).timestamp())


# -- robfig/cron: parser_test.go TestRange, TestField, TestAll (getRange/getField bit sets)

BITS = [
    P("5", 0, 7, 1 << 5, id="TestRange:5"),
    P("0", 0, 7, 1 << 0, id="TestRange:0"),
    P("7", 0, 7, 1 << 7, id="TestRange:7"),
    P("5-5", 0, 7, 1 << 5, id="TestRange:5-5"),
    P("5-6", 0, 7, 1 << 5 | 1 << 6, id="TestRange:5-6"),
    P("5-7", 0, 7, 1 << 5 | 1 << 6 | 1 << 7, id="TestRange:5-7"),
    P("5-6/2", 0, 7, 1 << 5, id="TestRange:5-6/2"),
    P("5-7/2", 0, 7, 1 << 5 | 1 << 7, id="TestRange:5-7/2"),
    P("5-7/1", 0, 7, 1 << 5 | 1 << 6 | 1 << 7, id="TestRange:5-7/1"),
    P("*", 1, 3, 1 << 1 | 1 << 2 | 1 << 3 | STAR_BIT, id="TestRange:*"),
    P("*/2", 1, 3, 1 << 1 | 1 << 3, id="TestRange:*/2-no-star-bit"),
    P("5--5", 0, 0, "too many hyphens", id="TestRange:5--5"),
    P("jan-x", 0, 0, "failed to parse int from", id="TestRange:jan-x"),
    P("2-x", 1, 5, "failed to parse int from", id="TestRange:2-x"),
    P("*/-12", 0, 0, "negative number", id="TestRange:*/-12"),
    P("*//2", 0, 0, "too many slashes", id="TestRange:*//2"),
    P("1", 3, 5, "below minimum", id="TestRange:1-below"),
    P("6", 3, 5, "above maximum", id="TestRange:6-above"),
    P("5-3", 3, 5, "beyond end of range", id="TestRange:5-3"),
    P("*/0", 0, 0, "should be a positive number", id="TestRange:*/0"),
    P("5", 1, 7, 1 << 5, id="TestField:5"),
    P("5,6", 1, 7, 1 << 5 | 1 << 6, id="TestField:5,6"),
    P("5,6,7", 1, 7, 1 << 5 | 1 << 6 | 1 << 7, id="TestField:5,6,7"),
    P("1,5-7/2,3", 1, 7, 1 << 1 | 1 << 5 | 1 << 7 | 1 << 3, id="TestField:1,5-7/2,3"),
    P("*", 0, 59, 0xFFFFFFFFFFFFFFF | STAR_BIT, id="TestAll:minutes"),
    P("*", 1, 31, 0xFFFFFFFE | STAR_BIT, id="TestAll:dom"),
    P("*", 0, 6, 0x7F | STAR_BIT, id="TestAll:dow"),
]


@pytest.mark.parametrize(("expr", "lo", "hi", "expected"), BITS)
def test_cron_field_bits(expr: str, lo: int, hi: int, expected: int | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            cron_field_bits(expr, lo, hi)
    else:
        assert cron_field_bits(expr, lo, hi) == expected


# -- robfig/cron parser.go Parse with cron.NewParser(Minute | Hour | Dom | Month | Dow) (types.go SyncWindow.active)

PARSE_ERRORS = [
    P("5 j * * *", "failed to parse int from", id="TestStandardSpecSchedule:5-j"),
    P("* * * *", "expected exactly 5 fields", id="TestStandardSpecSchedule:4-fields"),
    P("", "empty spec string", id="TestParseScheduleErrors:empty"),
    P("@every 1m", "parser does not accept descriptors", id="TestNoDescriptorParser"),
    P("@daily", "parser does not accept descriptors", id="argocd-parser:no-Descriptor-@daily"),
    P("@hourly", "parser does not accept descriptors", id="argocd-parser:no-Descriptor-@hourly"),
    P("xyz", "expected exactly 5 fields", id="TestErrors:xyz"),
    P("60 0 * * *", "above maximum", id="TestErrors:minute-60"),
    P("0 60 * * *", "above maximum", id="TestErrors:hour-60"),
    P("0 0 * * XYZ", "failed to parse int from", id="TestErrors:dow-XYZ"),
    P("TZ=America/New_York 15/0 * * * *", "should be a positive number", id="TestSlash0NoHang"),
    P("* 10 * * 7", "above maximum", id="types_test:TestSyncWindow_Active:dow-7"),
    P("0 0 * * 0-7", "above maximum", id="spec.go:dow-bounds-0-6"),
    P("0 0 0 * * *", "expected exactly 5 fields, found 6", id="argocd-parser:no-seconds-field"),
    P("0 0 L * *", "failed to parse int from", id="getRange:no-L"),
    P("0 0 * * 1#2", "failed to parse int from", id="getRange:no-#"),
    P("0 0 0 * *", "below minimum", id="spec.go:dom-bounds-1-31"),
    P("TZ=Mars/Olympus 0 0 * * *", "provided bad location", id="Parse:TZ-prefix-bad-location"),
]


@pytest.mark.parametrize(("spec", "error"), PARSE_ERRORS)
def test_cron_refuses(spec: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_cron(spec)


# -- Go time.ParseDuration: src/time/time_test.go parseDurationTests / parseDurationErrorTests

DURATIONS = [
    P("0", 0, id="parseDurationTests:0"),
    P("5s", 5 * 10**9, id="parseDurationTests:5s"),
    P("-5s", -5 * 10**9, id="parseDurationTests:-5s"),
    P("+5s", 5 * 10**9, id="parseDurationTests:+5s"),
    P("-0", 0, id="parseDurationTests:-0"),
    P("+0", 0, id="parseDurationTests:+0"),
    P("5.6s", 5_600_000_000, id="parseDurationTests:5.6s"),
    P("5.s", 5 * 10**9, id="parseDurationTests:5.s"),
    P(".5s", 500_000_000, id="parseDurationTests:.5s"),
    P("1.004s", 1_004_000_000, id="parseDurationTests:1.004s"),
    P("100.00100s", 100_001_000_000, id="parseDurationTests:100.00100s"),
    P("10ns", 10, id="parseDurationTests:10ns"),
    P("11us", 11_000, id="parseDurationTests:11us"),
    P("12\u00b5s", 12_000, id="parseDurationTests:12-micro-sign-s"),
    P("12\u03bcs", 12_000, id="parseDurationTests:12-mu-s"),
    P("13ms", 13_000_000, id="parseDurationTests:13ms"),
    P("15m", 15 * 60 * 10**9, id="parseDurationTests:15m"),
    P("16h", 16 * 3600 * 10**9, id="parseDurationTests:16h"),
    P("3h30m", (3 * 3600 + 30 * 60) * 10**9, id="parseDurationTests:3h30m"),
    P("10.5s4m", 4 * 60 * 10**9 + 10_500_000_000, id="parseDurationTests:10.5s4m"),
    P("-2m3.4s", -(123_400_000_000), id="parseDurationTests:-2m3.4s"),
    P("1h2m3s4ms5us6ns", 3723 * 10**9 + 4_005_006, id="parseDurationTests:1h2m3s4ms5us6ns"),
    P("0.3333333333333333333h", 20 * 60 * 10**9, id="parseDurationTests:issue-6617"),
    P("9007199254740993ns", (1 << 53) + 1, id="parseDurationTests:2^53+1"),
    P("9223372036854775807ns", (1 << 63) - 1, id="parseDurationTests:max"),
    P("9223372036854775.807us", (1 << 63) - 1, id="parseDurationTests:max-us"),
    P("-9223372036854775808ns", -(1 << 63), id="parseDurationTests:min"),
    P("-2562047h47m16.854775808s", -(1 << 63), id="parseDurationTests:issue-48629"),
    P("0.100000000000000000000h", 6 * 60 * 10**9, id="parseDurationTests:issue-15011"),
    P("0.830103483285477580700h", (49 * 60 + 48) * 10**9 + 372_539_827, id="parseDurationTests:leadingFraction"),
    P("1.5h", 90 * 60 * 10**9, id="ParseDuration:1.5h"),
    P("90m", 90 * 60 * 10**9, id="ParseDuration:90m"),
    P("300ms", 300_000_000, id="ParseDuration:300ms"),
    P("336h", 336 * 3600 * 10**9, id="ParseDuration:336h-year-end"),
    P("", "invalid duration", id="parseDurationErrorTests:empty"),
    P("3", "missing unit", id="parseDurationErrorTests:3"),
    P("90", "missing unit", id="ParseDuration:no-unit"),
    P("-", "invalid duration", id="parseDurationErrorTests:-"),
    P("s", "invalid duration", id="parseDurationErrorTests:s"),
    P(".", "invalid duration", id="parseDurationErrorTests:."),
    P("-.", "invalid duration", id="parseDurationErrorTests:-."),
    P(".s", "invalid duration", id="parseDurationErrorTests:.s"),
    P("+.s", "invalid duration", id="parseDurationErrorTests:+.s"),
    P("1d", "unknown unit", id="parseDurationErrorTests:1d"),
    P("1000days", "unknown unit", id="types_test:TestSyncWindow_Validate:1000days"),
    P("1h 30m", "unknown unit", id="ParseDuration:no-spaces"),
    P("9223372036854775810ns", "invalid duration", id="parseDurationErrorTests:overflow-10"),
    P("9223372036854775808ns", "invalid duration", id="parseDurationErrorTests:overflow-08"),
    P("-9223372036854775809ns", "invalid duration", id="parseDurationErrorTests:min-1"),
    P("3000000h", "invalid duration", id="parseDurationErrorTests:3000000h"),
    P("9223372036854775.808us", "invalid duration", id="parseDurationErrorTests:overflow-us"),
    P("9223372036854ms775us808ns", "invalid duration", id="parseDurationErrorTests:overflow-composite"),
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_go_duration(text: str, expected: int | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            parse_go_duration(text)
    else:
        assert parse_go_duration(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        P("1.5h", dt.timedelta(minutes=90), id="ParseDuration:1.5h"),
        P("1h30m", dt.timedelta(minutes=90), id="ParseDuration:1h30m"),
        P("-1.5h", -dt.timedelta(minutes=90), id="ParseDuration:-1.5h"),
        P("1500ns", dt.timedelta(microseconds=1), id="ParseDuration:ns-truncated-to-us"),
    ],
)
def test_parse_duration_timedelta(text: str, expected: dt.timedelta) -> None:
    assert parse_duration(text) == expected


# -- argo-cd types.go SyncWindow.active: Next(now + off - d) strictly before now + off; off at now (UTC fallback)

YEAR_END = {"kind": "deny", "schedule": "0 0 20 12 *", "duration": "336h", "timeZone": "UTC"}
WEEKEND = {"kind": "deny", "schedule": "0 18 * * 5", "duration": "60h", "timeZone": "UTC"}
DAY = dt.date(2026, 11, 25)  # a Wednesday in EST/CET (winter offsets)


def at(hour: int, minute: int = 0, tz: dt.tzinfo = UTC, day: dt.date = DAY) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=tz)


def w(schedule: str, duration: str, tz: str = "", kind: str = "allow") -> dict[str, Any]:
    return {"kind": kind, "schedule": schedule, "duration": duration, "timeZone": tz}


UTC_M4 = dt.timezone(dt.timedelta(hours=-4))
ACTIVE = [
    P(w("* 10 * * *", "2h"), at(11), True, id="TestSyncWindow_Active:Allow-active"),
    P(w("* 10 * * *", "2h"), at(13), False, id="TestSyncWindow_Active:Allow-inactive"),
    P(w("* 10 * * *", "2h", kind="deny"), at(11), True, id="TestSyncWindow_Active:Deny-active"),
    P(w("* 10 * * *", "2h"), at(11 - 4, tz=UTC_M4), True, id="TestSyncWindow_Active:Allow-active-NonUTC"),
    P(w("* 10 * * *", "2h"), at(13 - 4, tz=UTC_M4), False, id="TestSyncWindow_Active:Allow-inactive-NonUTC"),
    P(w("* 10 * * 7", "2h"), at(11), "cannot parse schedule", id="TestSyncWindow_Active:InvalidSchedule"),
    P(w("* 10 * * *", "2a"), at(11), "cannot parse duration", id="TestSyncWindow_Active:InvalidDuration"),
    P(w("* 10 * * *", "2h", "America/New_York"), at(16), True, id="TestSyncWindows_Active:MatchFirst-TimeZone"),
    P(w("* 14 * * *", "2h", "America/New_York"), at(20), True, id="TestSyncWindows_Active:MatchSecond-TimeZone"),
    P(w("* 10 * * *", "2h", "America/New_York"), at(22), False, id="TestSyncWindows_Active:MatchNone-TimeZone"),
    P(w("* 8 * * *", "2h", "Asia/Dhaka"), at(3), True, id="TestSyncWindows_Active:PositiveTimeZone"),
    # The prod year-end freeze (environments/argocd/appproject-llm-service.yaml): no look-back cap.
    P(YEAR_END, dt.datetime(2026, 12, 30, 12, tzinfo=UTC), True, id="active:year-end-Dec-30"),
    P(YEAR_END, dt.datetime(2027, 1, 2, 12, tzinfo=UTC), True, id="active:year-end-Jan-2"),
    P(YEAR_END, dt.datetime(2027, 1, 2, 23, 59, 59, 999999, tzinfo=UTC), True, id="active:year-end-last-us"),
    P(YEAR_END, dt.datetime(2027, 1, 3, tzinfo=UTC), False, id="active:year-end-ends-Jan-3-00:00"),
    P(YEAR_END, dt.datetime(2027, 1, 4, tzinfo=UTC), False, id="active:year-end-Jan-4"),
    # The prod weekend freeze: Fri 18:00 to Mon 06:00 UTC; Before is strict at both ends.
    P(WEEKEND, dt.datetime(2026, 11, 28, 12, tzinfo=UTC), True, id="active:weekend-Sat"),
    P(WEEKEND, dt.datetime(2026, 11, 29, 23, tzinfo=UTC), True, id="active:weekend-Sun"),
    P(WEEKEND, dt.datetime(2026, 11, 30, 5, 59, tzinfo=UTC), True, id="active:weekend-Mon-05:59"),
    P(WEEKEND, dt.datetime(2026, 11, 30, 6, tzinfo=UTC), False, id="active:weekend-Mon-06:00"),
    P(WEEKEND, dt.datetime(2026, 11, 27, 18, tzinfo=UTC), False, id="active:weekend-Fri-18:00:00-exactly"),
    P(WEEKEND, dt.datetime(2026, 11, 27, 18, 0, 0, 1, tzinfo=UTC), True, id="active:weekend-Fri-18:00:00.000001"),
    # Next returns the zero time (no occurrence within 5 years), which is Before now: active for good.
    P(w("0 0 30 2 *", "1h"), at(12), True, id="active:Feb-30-zero-time-always-active"),
    P(w("0 0 31 4 *", "1m"), at(12), True, id="active:Apr-31-zero-time-always-active"),
    # Go durations: negative and zero ones never make a window active; fractions are exact.
    P(w("0 10 * * *", "-1h"), at(10, 30), False, id="active:negative-duration"),
    P(w("0 10 * * *", "0"), at(10), False, id="active:zero-duration"),
    P(w("0 10 * * *", "1.5h"), at(11, 29), True, id="active:1.5h-at-11:29"),
    P(w("0 10 * * *", "1.5h"), at(11, 30), False, id="active:1.5h-at-11:30"),
    P(w("0 10 * * *", "300ms"), at(10).replace(microsecond=200_000), True, id="active:300ms-at-+200ms"),
    P(w("0 10 * * *", "300ms"), at(10).replace(microsecond=300_000), False, id="active:300ms-at-+300ms"),
    # scheduleOffsetByTimeZone: the zone's offset at the moment of evaluation (Europe/Berlin: +2 summer, +1 winter).
    P(
        w("0 8 * * *", "1h", "Europe/Berlin"),
        dt.datetime(2026, 7, 1, 6, 30, tzinfo=UTC),
        True,
        id="tz:Berlin-CEST-06:30Z",
    ),
    P(w("0 8 * * *", "1h", "Europe/Berlin"), at(6, 30), False, id="tz:Berlin-CET-06:30Z"),
    P(w("0 8 * * *", "1h", "Europe/Berlin"), at(7, 30), True, id="tz:Berlin-CET-07:30Z"),
    # A window over the spring-forward: 00:00 CET + 3h is judged at 01:30Z with +2 (03:30 wall): over already.
    P(
        w("0 0 29 3 *", "3h", "Europe/Berlin"),
        dt.datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
        False,
        id="tz:Berlin-spring-forward-fixed-offset",
    ),
    # Over the fall-back, 02:00-02:30 wall happens twice, and so does the window.
    P(
        w("0 2 25 10 *", "30m", "Europe/Berlin"),
        dt.datetime(2026, 10, 25, 0, 15, tzinfo=UTC),
        True,
        id="tz:Berlin-fall-back-first",
    ),
    P(
        w("0 2 25 10 *", "30m", "Europe/Berlin"),
        dt.datetime(2026, 10, 25, 1, 15, tzinfo=UTC),
        True,
        id="tz:Berlin-fall-back-second",
    ),
    # time.LoadLocation fails: Argo CD logs a warning and uses UTC.
    P(w("0 10 * * *", "1h", "Mars/Olympus"), at(10, 30), True, id="scheduleOffsetByTimeZone:invalid-zone-is-UTC"),
    # A CRON_TZ prefix is honoured by robfig on top of timeZone's offset: Berlin counted twice (active 08:00Z-09:00Z).
    P(
        w("CRON_TZ=Europe/Berlin 0 10 * * *", "1h", "Europe/Berlin"),
        at(8, 30),
        True,
        id="Next:CRON_TZ-plus-timeZone-offset",
    ),
    P(
        w("CRON_TZ=Europe/Berlin 0 10 * * *", "1h", "Europe/Berlin"),
        at(9, 30),
        False,
        id="Next:CRON_TZ-plus-timeZone-offset-2",
    ),
]


@pytest.mark.parametrize(("window", "now", "expected"), ACTIVE)
def test_window_active(window: Mapping[str, Any], now: dt.datetime, expected: bool | str) -> None:
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            window_active(window, now)
    else:
        assert window_active(window, now) is expected


@pytest.mark.parametrize(
    ("window", "now", "since"),
    [
        P(YEAR_END, dt.datetime(2027, 1, 2, 12, tzinfo=UTC), dt.datetime(2026, 12, 20, tzinfo=UTC), id="year-end"),
        P(WEEKEND, dt.datetime(2026, 11, 29, 23, tzinfo=UTC), dt.datetime(2026, 11, 27, 18, tzinfo=UTC), id="weekend"),
        # Overlapping occurrences (every 30 min for 1h) make one stretch: it began at the first one.
        P(w("0,30 9 * * *", "1h"), at(10, 15), at(9), id="overlapping-occurrences"),
        P(w("0 0 * * *", "1h"), at(12), None, id="inactive"),
    ],
)
def test_window_start(window: Mapping[str, Any], now: dt.datetime, since: dt.datetime | None) -> None:
    assert window_start(window, now) == since


# -- argo-cd types.go SyncWindows.Matches (globMatch → util/glob.Match, gobwas/glob without separators)

TEST_APP = AppIdentity(name="test-app", namespace="default", server="cluster1", cluster_name="clusterName")


def sel(
    apps: list[str] | None = None, ns: list[str] | None = None, cl: list[str] | None = None, *, and_op: bool = False
) -> dict[str, Any]:
    return {"applications": apps or [], "namespaces": ns or [], "clusters": cl or [], "andOperator": and_op}


MATCHES = [
    P(sel(ns=["default"]), True, id="TestSyncWindows_Matches:MatchNamespace"),
    P(sel(cl=["cluster1"]), True, id="TestSyncWindows_Matches:MatchCluster"),
    P(sel(cl=["clusterName"]), True, id="TestSyncWindows_Matches:MatchClusterName"),
    P(sel(apps=["test-app"]), True, id="TestSyncWindows_Matches:MatchAppName"),
    P(sel(["test-app"], ["default"]), True, id="TestSyncWindows_Matches:MatchAppNameAndNamespace"),
    P(sel(["test-*"], cl=["clusterN*"]), True, id="TestSyncWindows_Matches:WildcardAppAndCluster"),
    P(sel(), False, id="TestSyncWindows_Matches:NoMatch-nothing-set"),
    P(sel(ns=["default"], and_op=True), True, id="TestSyncWindows_Matches_AND_Operator:MatchNamespace"),
    P(sel(cl=["cluster1"], and_op=True), True, id="TestSyncWindows_Matches_AND_Operator:MatchCluster"),
    P(
        sel(["test-app"], ["default"], ["clusterName"], and_op=True),
        True,
        id="TestSyncWindows_Matches_AND_Operator:All",
    ),
    P(sel(["test-*"], cl=["clusterN*"], and_op=True), True, id="TestSyncWindows_Matches_AND_Operator:Wildcards"),
    P(sel(and_op=True), False, id="TestSyncWindows_Matches_AND_Operator:NoMatch-nothing-set"),
    # OR: any set selector; AND: every set selector, an unset (empty) one is no constraint.
    P(sel(["other"], ["default"]), True, id="Matches:OR-namespace-alone"),
    P(sel(["test-app"], ["other"], and_op=True), False, id="Matches:AND-namespace-fails"),
    P(sel(["test-*"], cl=["nope"], and_op=True), False, id="Matches:AND-cluster-fails"),
    P(sel(ns=["default"], cl=["cluster1"], and_op=True), True, id="Matches:AND-empty-apps-ignored"),
    P(sel(["other"], cl=["cluster1"]), True, id="Matches:OR-cluster-alone"),
    # gobwas/glob grammar: alternatives, classes, escapes; `*` crosses `/` and `.` (no separators).
    P(sel(["{other,test-app}"]), True, id="gobwas:{a,b}-alternatives"),
    P(sel(["test-[!b]pp"]), True, id="gobwas:[!b]-negated-class"),
    P(sel(["test-[a-c]pp"]), True, id="gobwas:[a-c]-range"),
    P(sel(["test\\-app"]), True, id="gobwas:backslash-escape"),
    P(sel(["test-ap[p"]), False, id="gobwas:unclosed-class-fails-to-compile"),
    P(sel(["test-app[]"]), False, id="gobwas:empty-class-fails-to-compile"),
    P(sel(["TEST-APP"]), False, id="gobwas:case-sensitive"),
    P(sel(["test-?pp"]), True, id="gobwas:?-single"),
]


@pytest.mark.parametrize(("window", "expected"), MATCHES)
def test_window_matches(window: Mapping[str, Any], expected: bool) -> None:
    assert window_matches(window, TEST_APP) is expected


@pytest.mark.parametrize(
    ("pattern", "text", "expected"),
    [
        P("https://*", "https://kubernetes.default.svc", True, id="gobwas:*-crosses-slash"),
        P("*.svc", "https://kubernetes.default.svc", True, id="gobwas:*-crosses-dots"),
        P("llm-*", "", False, id="globMatch:empty-value"),
        P("*", "", True, id="globMatch:star-fast-path"),
        P("llm-{dev,prod}", "llm-staging", False, id="gobwas:alternatives-no-match"),
    ],
)
def test_glob_match(pattern: str, text: str, expected: bool) -> None:
    assert glob_match(pattern, text) is expected


# -- argo-cd types.go SyncWindows.CanSync(isManual): rows of types_test.go TestSyncWindows_CanSync

NOW = at(12)


def cw(kind: str, active: bool, manual: bool) -> dict[str, Any]:
    """types_test.go newSyncWindow: active = "* * * * *", inactive = 10h from now (inactiveCronSchedule), 1h."""
    return {"kind": kind, "schedule": "* * * * *" if active else "0 22 * * *", "duration": "1h", "manualSync": manual}


CAN_SYNC = [
    P([cw("deny", False, True)], True, True, id="CanSync:manual-inactive-deny-manual-true"),
    P([cw("deny", False, False)], True, True, id="CanSync:manual-inactive-deny-manual-false"),
    P(
        [cw("allow", False, True), cw("allow", False, False)],
        True,
        False,
        id="CanSync:manual-inactive-allows-one-manual-false",
    ),
    P([cw("allow", True, True)], True, True, id="CanSync:manual-active-allow-manual-true"),
    P([cw("allow", True, False)], True, True, id="CanSync:manual-active-allow-manual-false"),
    P([cw("allow", True, False)], False, True, id="CanSync:auto-active-allow"),
    P([cw("allow", True, False), cw("deny", False, False)], True, True, id="CanSync:manual-active-allow-inactive-deny"),
    P([cw("allow", True, False), cw("deny", False, False)], False, True, id="CanSync:auto-active-allow-inactive-deny"),
    P([cw("allow", False, False)], True, False, id="CanSync:manual-inactive-allow"),
    P([cw("allow", False, False)], False, False, id="CanSync:auto-inactive-allow"),
    P([cw("allow", False, True)], True, True, id="CanSync:manual-inactive-allow-ManualSync"),
    P([cw("allow", False, True)], False, False, id="CanSync:auto-inactive-allow-ManualSync"),
    P(
        [cw("allow", False, False), cw("deny", False, False)],
        True,
        False,
        id="CanSync:manual-inactive-allow-inactive-deny",
    ),
    P(
        [cw("allow", False, False), cw("deny", False, False)],
        False,
        False,
        id="CanSync:auto-inactive-allow-inactive-deny",
    ),
    P(
        [cw("allow", True, False), cw("allow", False, False)],
        False,
        True,
        id="CanSync:auto-active-allow-inactive-allow",
    ),
    P([cw("deny", True, False)], True, False, id="CanSync:manual-active-deny"),
    P([cw("deny", True, False)], False, False, id="CanSync:auto-active-deny"),
    P([cw("deny", True, True)], True, True, id="CanSync:manual-active-deny-ManualSync"),
    P([cw("deny", True, True)], False, False, id="CanSync:auto-active-deny-ManualSync"),
    P(
        [cw("deny", True, True)] * 3 + [cw("deny", True, False)],
        True,
        False,
        id="CanSync:manual-many-active-deny-one-not-manual",
    ),
    P(
        [cw("deny", True, True)] * 3 + [cw("deny", True, False)],
        False,
        False,
        id="CanSync:auto-many-active-deny-one-not-manual",
    ),
    P([cw("allow", True, False), cw("deny", True, False)], True, False, id="CanSync:manual-active-deny-and-allow"),
    P(
        [cw("allow", True, False), cw("deny", True, True)],
        True,
        True,
        id="CanSync:manual-active-deny-ManualSync-and-allow",
    ),
    P(
        [cw("allow", True, False), cw("deny", True, True)],
        False,
        False,
        id="CanSync:auto-active-deny-ManualSync-and-allow",
    ),
    P(
        [{**cw("allow", False, True), "schedule": "* 10 * * 7"}],
        True,
        False,
        id="CanSync:invalid-windows-refuse-manual",
    ),
    P([{**cw("deny", False, True), "duration": "1d"}], False, False, id="CanSync:invalid-duration-refuses-auto"),
    P([], False, True, id="CanSync:no-windows"),
    P([cw("Deny", True, False)], False, True, id="CanSync:kind-is-case-sensitive"),
]


@pytest.mark.parametrize(("windows", "manual", "allowed"), CAN_SYNC)
def test_can_sync(windows: list[Mapping[str, Any]], manual: bool, allowed: bool) -> None:
    assert (can_sync(windows, NOW, manual=manual) is None) is allowed


# -- the env's Application (ApplicationSet template) against the repo's AppProjects

PROD_APPS = ["llm-service-prod"]


def gitops_repo(
    tmp_path: Path, windows: list[dict[str, Any]], other_project: list[dict[str, Any]] | None = None
) -> GitOpsRepo:
    """A GitOps tree with the repo's ApplicationSet and an llm-service AppProject holding `windows`."""
    argocd = tmp_path / "environments" / "argocd"
    argocd.mkdir(parents=True)
    shutil.copy(REPO / "environments/argocd/applicationset-llm-service.yaml", argocd)
    docs = [
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AppProject",
            "metadata": {"name": "llm-service"},
            "spec": {"syncWindows": windows},
        }
    ]
    if other_project is not None:
        docs.append(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AppProject",
                "metadata": {"name": "llm-platform"},
                "spec": {"syncWindows": other_project},
            }
        )
    (argocd / "appprojects.yaml").write_text("---\n".join(dump_yaml(d) for d in docs))
    return GitOpsRepo("unused", tmp_path)


SAT = dt.datetime(2026, 11, 28, 12, tzinfo=UTC)


def deny(**selectors: Any) -> dict[str, Any]:
    return {"kind": "deny", "schedule": "0 18 * * 5", "duration": "60h", "timeZone": "UTC", **selectors}


REPO_MATCHES = [
    P([deny(clusters=["https://kubernetes.default.svc"])], None, True, id="Matches:cluster-is-destination.server"),
    P([deny(clusters=["in-cluster"])], None, False, id="Matches:cluster-name-unset-no-match"),
    P([deny(namespaces=["llm-prod"])], None, True, id="Matches:namespace-is-destination.namespace"),
    P([deny(namespaces=["prod"])], None, False, id="Matches:namespace-not-a-guess"),
    P([deny(applications=["prod"])], None, False, id="Matches:application-name-not-a-guess"),
    P(
        [deny(applications=PROD_APPS, namespaces=["llm-staging"], andOperator=True)],
        None,
        False,
        id="Matches:andOperator-app-and-namespace",
    ),
    P(
        [deny(applications=["llm-service-*"], clusters=["https://kubernetes.default.svc"], andOperator=True)],
        None,
        True,
        id="Matches:andOperator-app-and-cluster",
    ),
    P(
        [deny(applications=["llm-service-prod"], namespaces=["llm-staging"])],
        None,
        True,
        id="Matches:OR-app-or-namespace",
    ),
    P([], [deny(applications=PROD_APPS)], False, id="controller:only-the-Application's-project"),
]


@pytest.mark.parametrize(("windows", "other_project", "applies"), REPO_MATCHES)
def test_windows_of_the_env_application(
    tmp_path: Path, windows: list[dict[str, Any]], other_project: list[dict[str, Any]] | None, applies: bool
) -> None:
    found = sync_windows(gitops_repo(tmp_path, windows, other_project), "prod", SAT)
    assert bool(found["active_deny"]) is applies


def test_inactive_allow_with_manual_sync_lets_a_manual_sync_through(tmp_path: Path) -> None:
    """CanSync: an inactive allow window with manualSync permits manual syncs, never automated ones."""
    allow = {
        "kind": "allow",
        "schedule": "0 9 * * 1-5",
        "duration": "8h",
        "applications": PROD_APPS,
        "manualSync": True,
    }
    repo = gitops_repo(tmp_path, [allow])
    assert sync_hold(repo, "prod", SAT, manual=True) is None
    assert sync_hold(repo, "prod", SAT, manual=False) == "outside every allow window (allow '0 9 * * 1-5' for 8h (UTC))"
    assert sync_windows(repo, "prod", SAT)["active_allow"] == []


def test_an_invalid_matching_window_refuses_every_sync(tmp_path: Path) -> None:
    """CanSync returns an error (so false) for both the controller and the API server when a window does not parse."""
    repo = gitops_repo(tmp_path, [deny(applications=PROD_APPS, schedule="0 18 * * 7")])
    for manual in (True, False):
        hold = sync_hold(repo, "prod", SAT, manual=manual)
        assert hold is not None and "cannot parse schedule '0 18 * * 7'" in hold
    with pytest.raises(GitOpsError, match="refuses every sync"):
        sync_windows(repo, "prod", SAT)


# -- the repo's own prod windows (environments/argocd/appproject-llm-service.yaml)

YEAR_END_LABEL = "deny '0 0 20 12 *' for 336h (UTC)"
WEEKEND_LABEL = "deny '0 18 * * 5' for 60h (UTC)"


@pytest.mark.parametrize(
    ("now", "active", "hold"),
    [
        P(
            dt.datetime(2026, 12, 30, 12, tzinfo=UTC),
            [(YEAR_END_LABEL, "Sun 2026-12-20 00:00 UTC", "Sun 2027-01-03 00:00 UTC")],
            f"{YEAR_END_LABEL} until Sun 2027-01-03 00:00 UTC",
            id="year-end-Wed-Dec-30",
        ),
        P(
            dt.datetime(2027, 1, 2, 12, tzinfo=UTC),
            [
                (YEAR_END_LABEL, "Sun 2026-12-20 00:00 UTC", "Sun 2027-01-03 00:00 UTC"),
                (WEEKEND_LABEL, "Fri 2027-01-01 18:00 UTC", "Mon 2027-01-04 06:00 UTC"),
            ],
            f"{YEAR_END_LABEL} until Sun 2027-01-03 00:00 UTC; {WEEKEND_LABEL} until Mon 2027-01-04 06:00 UTC",
            id="year-end-and-weekend-Sat-Jan-2",
        ),
        P(dt.datetime(2027, 1, 4, 12, tzinfo=UTC), [], None, id="none-Mon-Jan-4"),
        P(
            SAT,
            [(WEEKEND_LABEL, "Fri 2026-11-27 18:00 UTC", "Mon 2026-11-30 06:00 UTC")],
            f"{WEEKEND_LABEL} until Mon 2026-11-30 06:00 UTC",
            id="weekend-Sat",
        ),
        P(
            dt.datetime(2026, 11, 29, 12, tzinfo=UTC),
            [(WEEKEND_LABEL, "Fri 2026-11-27 18:00 UTC", "Mon 2026-11-30 06:00 UTC")],
            f"{WEEKEND_LABEL} until Mon 2026-11-30 06:00 UTC",
            id="weekend-Sun",
        ),
        P(dt.datetime(2026, 11, 30, 6, tzinfo=UTC), [], None, id="weekend-over-Mon-06:00"),
    ],
)
def test_prod_windows(now: dt.datetime, active: list[tuple[str, str, str]], hold: str | None) -> None:
    repo = GitOpsRepo("unused", REPO)
    found = sync_windows(repo, "prod", now)
    assert [(d["window"], d["since"], d["ends"]) for d in found["active_deny"]] == active
    assert sync_hold(repo, "prod", now, manual=False) == hold
    assert sync_hold(repo, "prod", now, manual=True) is None  # both have manualSync: true (rollbacks go through)


def test_until_follows_the_zone_over_a_dst_change(tmp_path: Path) -> None:
    """A Berlin deny from Sat 00:00 CET for 48h ends Mon 00:00 CEST: 22:00Z, where Argo CD (offset +2 by then) stops."""
    window = {
        "kind": "deny",
        "schedule": "0 0 28 3 *",
        "duration": "48h",
        "timeZone": "Europe/Berlin",
        "applications": PROD_APPS,
    }
    found = sync_windows(gitops_repo(tmp_path, [window]), "prod", dt.datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert [(d["since"], d["ends"]) for d in found["active_deny"]] == [
        ("Fri 2026-03-27 23:00 UTC", "Sun 2026-03-29 22:00 UTC")
    ]
    assert window_active(window, dt.datetime(2026, 3, 29, 21, 59, tzinfo=UTC))
    assert not window_active(window, dt.datetime(2026, 3, 29, 22, 0, tzinfo=UTC))
