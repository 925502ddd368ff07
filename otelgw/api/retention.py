"""Retention over HTTP (admin): GET and PUT /api/v1/retention (docs/privacy.md, "Retention").

GET answers the defaults and the per-project policies the caller may see: an admin of every
project gets the projects that have a policy of their own; an admin of some projects gets each
of theirs, with `source` saying whether the policy is the project's own or the defaults.
PUT stores one policy (`project_id: "*"` for the defaults, an admin of every project only);
omitted kinds keep their current value. The CLI (`otelgw retention`) does the same against the
store directly."""

from __future__ import annotations

import msgspec
from aiohttp import web
from clickhouse_connect.driver.client import Client

from otelgw.api.common import READER_KEY, ApiError, decode_body, json_response, principal
from otelgw.governance.audit import audit
from otelgw.governance.retention import (
    DEFAULTS_PROJECT,
    InvalidPolicy,
    RetentionPolicy,
    RetentionSettings,
    RetentionStore,
    validate,
    with_changes,
)

# The store's ClickHouse cluster (config clickhouse_cluster), empty on one server: TTLs go ON CLUSTER.
CLUSTER_KEY: web.AppKey[str] = web.AppKey("clickhouse_cluster", str)


def _store(request: web.Request, client: Client) -> RetentionStore:
    return RetentionStore(client, cluster=request.app.get(CLUSTER_KEY) or None)


class SetRetention(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    project_id: str
    content_days: int | None = None
    numbers_days: int | None = None
    spans_days: int | None = None


def _policy(policy: RetentionPolicy, source: str | None = None) -> dict:
    data = msgspec.to_builtins(policy)
    if source is not None:
        data["source"] = source
    return data


async def get_retention(request: web.Request) -> web.Response:
    caller = principal(request)
    settings: RetentionSettings = await request.app[READER_KEY].call(lambda client: _store(request, client).get_all())
    if caller.projects is None:
        projects = [_policy(p, "project") for p in settings.projects]
    else:
        projects = [_policy(settings.effective(name), "project" if settings.has_own(name) else "defaults")
                    for name in sorted(caller.projects)]
    return json_response({"defaults": _policy(settings.defaults), "projects": projects})


async def set_retention(request: web.Request) -> web.Response:
    caller = principal(request)
    body = await decode_body(request, SetRetention)
    project = body.project_id
    if project == DEFAULTS_PROJECT and caller.projects is not None:
        raise ApiError(403, "forbidden", "only an admin of every project may set the defaults (project_id '*')")
    if caller.projects is not None and project not in caller.projects:
        raise ApiError(403, "forbidden", f"this key may not set the retention of project {project!r}")

    reader = request.app[READER_KEY]
    settings: RetentionSettings = await reader.call(lambda client: _store(request, client).get_all())
    policy = with_changes(settings.effective(project), content_days=body.content_days,
                          numbers_days=body.numbers_days, spans_days=body.spans_days)
    try:
        validate(policy)
    except InvalidPolicy as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    stored = await reader.call(lambda client: _store(request, client).set(policy, by=caller.key_id or "anonymous"))
    audit(request, "retention.set", target=project, project=project,
          detail=f"content_days={stored.content_days} numbers_days={stored.numbers_days} "
                 f"spans_days={stored.spans_days}")
    return json_response(_policy(stored))
