"""API keys over HTTP (admin): GET/POST /api/v1/keys, DELETE /api/v1/keys/{key_id}. An admin
limited to some projects manages keys for those projects only. The CLI (`otelgw keys`) does the
same against the store directly."""

from __future__ import annotations

import msgspec
from aiohttp import web

from otelgw.api.common import AUTH_KEY, READER_KEY, ApiError, decode_body, json_response, principal
from otelgw.governance.audit import audit
from otelgw.store.keys import ROLES, ApiKey, KeyStore, check_projects


class CreateKey(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    projects: list[str]
    role: str
    ingest: bool = False
    name: str = ""


def _audit_key(request: web.Request, action: str, record: ApiKey) -> None:
    audit(request, action, target=record.key_id, project=record.projects[0] if len(record.projects) == 1 else "",
          detail=f"role={record.role} ingest={str(record.ingest).lower()} projects={','.join(record.projects) or '*'}")


def _public(record: object) -> dict:
    data = msgspec.to_builtins(record)
    data.pop("secret_hash", None)
    return data


async def list_keys(request: web.Request) -> web.Response:
    caller = principal(request)
    keys = await request.app[READER_KEY].call(lambda client: KeyStore(client).all())
    visible = [k for k in keys if caller.projects is None or (k.projects and set(k.projects) <= caller.projects)]
    return json_response({"keys": [_public(k) for k in visible]})


async def create_key(request: web.Request) -> web.Response:
    caller = principal(request)
    body = await decode_body(request, CreateKey)
    if body.role not in ROLES:
        raise ApiError(400, "invalid_request", f"role must be one of {', '.join(ROLES)}")
    try:
        projects = check_projects(body.projects)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    if caller.projects is not None and (not projects or not set(projects) <= caller.projects):
        raise ApiError(403, "forbidden", "an admin of some projects can create keys for those projects only")
    try:
        created = await request.app[READER_KEY].call(
            lambda client: KeyStore(client).create(projects=projects, role=body.role, ingest=body.ingest,
                                                   name=body.name))
    except ValueError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    await request.app[READER_KEY].call(lambda client: request.app[AUTH_KEY].reload())
    _audit_key(request, "key.create", created.record)
    return json_response({"key": created.key, **_public(created.record)}, status=201)


async def revoke_key(request: web.Request) -> web.Response:
    caller = principal(request)
    key_id = request.match_info["key_id"]
    keys = await request.app[READER_KEY].call(lambda client: KeyStore(client).all())
    target = next((k for k in keys if k.key_id == key_id), None)
    # An every-project key (no projects) is outside any limited admin's reach, as in the listing.
    if target is None or (caller.projects is not None and not (target.projects and
                                                               set(target.projects) <= caller.projects)):
        raise ApiError(404, "not_found", f"no key {key_id}")
    await request.app[READER_KEY].call(lambda client: KeyStore(client).revoke(key_id))
    await request.app[READER_KEY].call(lambda client: request.app[AUTH_KEY].reload())
    _audit_key(request, "key.revoke", target)
    return json_response({"key_id": key_id, "revoked": True})


async def whoami(request: web.Request) -> web.Response:
    """The caller's role and projects (null: every project), for the UI's project picker and
    what it offers (the settings page is for admins)."""
    caller = principal(request)
    return json_response({"role": caller.role, "projects": caller.project_list(), "key_id": caller.key_id or None,
                          "anonymous": not caller.key_id})
