"""Alertmanager webhook payload, version 4, as the controller receives it on POST /webhook."""

from __future__ import annotations

import datetime as dt
import re

from pydantic import BaseModel, ConfigDict, Field


class Alert(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    status: str
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: str = Field("", alias="startsAt")
    ends_at: str = Field("", alias="endsAt")
    fingerprint: str = ""


class WebhookPayload(BaseModel):
    """Alertmanager webhook payload, version 4: notify/webhook/webhook.go `Message` (template.Data inlined,
    `version`, `groupKey`, `truncatedAlerts`); each alert is template/template.go `Alert` (RFC 3339 times)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    version: str
    group_key: str = Field("", alias="groupKey")
    status: str = ""
    receiver: str = ""
    truncated_alerts: int = Field(0, alias="truncatedAlerts")
    alerts: list[Alert] = Field(default_factory=list)


def parse_time(text: str) -> dt.datetime | None:
    """RFC 3339 as Alertmanager sends it (nanoseconds, Z) → aware datetime; None if unparsable."""
    m = re.match(r"^(.*?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", text.strip())
    if not m:
        return None
    frac = f".{m.group(2)[:6]}" if m.group(2) else ""
    tz = (m.group(3) or "Z").replace("Z", "+00:00")
    try:
        return dt.datetime.fromisoformat(f"{m.group(1)}{frac}{tz}")
    except ValueError:
        return None
