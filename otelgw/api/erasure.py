"""Erasure over HTTP (admin): POST /api/v1/data/delete queues a job and answers 202 with its id
once the job is stored; GET /api/v1/data/delete/{job_id} reports its status and the rows per
table it removes. An admin limited to some projects erases in those projects only, and sees
only their jobs (another project's job is a 404). The work is otelgw/governance/erasure.py."""

from __future__ import annotations

import msgspec
from aiohttp import web

from otelgw.api.common import READER_KEY, ApiError, decode_body, json_response, principal
from otelgw.governance.audit import audit
from otelgw.governance.erasure import ErasureRunner, JobStore, SelectorError, build_selector, new_job

RUNNER_KEY: web.AppKey[ErasureRunner] = web.AppKey("erasure_runner", ErasureRunner)


class DeleteRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    project_id: str = ""
    user_id: str | None = None
    session_id: str | None = None
    inference_ids: list[str] | None = None
    from_date: str | None = None
    to_date: str | None = None
    dry_run: bool = False


async def create_job(request: web.Request) -> web.Response:
    caller = principal(request)
    body = await decode_body(request, DeleteRequest)
    if not body.project_id.strip():
        raise ApiError(400, "invalid_request", "project_id is required")
    try:
        selector = build_selector(user_id=body.user_id, session_id=body.session_id, inference_ids=body.inference_ids,
                                  from_date=body.from_date, to_date=body.to_date)
    except SelectorError as exc:
        raise ApiError(400, "invalid_request", str(exc)) from exc
    if not caller.sees(body.project_id):
        raise ApiError(403, "forbidden", f"this key may not delete data of project {body.project_id}")
    runner = request.app.get(RUNNER_KEY)
    if runner is None:
        raise ApiError(503, "unavailable", "the erasure runner is not running")
    job = new_job(body.project_id, selector, dry_run=body.dry_run, created_by=caller.key_id or "anonymous")
    await request.app[READER_KEY].call(lambda client: JobStore(client).save(job))
    runner.submit(job.job_id)
    audit(request, "data.delete", target=job.job_id, project=body.project_id,
          detail="dry run" if body.dry_run else "")
    return json_response(job.public(), status=202)


async def get_job(request: web.Request) -> web.Response:
    job_id = request.match_info["job_id"]
    job = await request.app[READER_KEY].call(lambda client: JobStore(client).get(job_id))
    if job is None or not principal(request).sees(job.project_id):
        raise ApiError(404, "not_found", f"no erasure job {job_id}")
    return json_response(job.public())
