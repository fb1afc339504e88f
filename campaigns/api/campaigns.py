"""Campaigns, uploads and contacts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from campaigns.api.contract import refused
from campaigns.api.deps import CampaignId, EngineDep, FlagsDep, RateDep, RuntimeDep, UploadId
from campaigns.api.multipart import spool_multipart
from campaigns.domain.csv_intake import RefusalCode, UploadRefused
from campaigns.domain.refusals import RefusalKind
from campaigns.domain.states import ContactState
from campaigns.domain.upload_preview import MAX_PREVIEW_ROWS, PREVIEW_ROWS
from campaigns.services import admin, campaign_contacts, uploads
from campaigns.services import campaigns as campaign_service
from schemas.api import (
    CONTROL_CHARS_PATTERN,
    MAX_ID,
    CampaignCreate,
    CampaignOut,
    ContactPage,
    RemoveBody,
    RemoveReport,
    StartBody,
    UploadOut,
    UploadPreview,
)

router = APIRouter()

StateFilter = Annotated[list[ContactState] | None, Query(alias="state")]
# A query value stored as text: no NUL or other control character (Postgres refuses NUL).
OneLine = Annotated[str | None, Query(max_length=255, pattern=CONTROL_CHARS_PATTERN)]
AfterId = Annotated[int, Query(ge=0, le=MAX_ID, description="the last id of the page before")]
UploadFilter = Annotated[
    int | None, Query(ge=0, le=MAX_ID, description="only the rows of this upload")
]


@router.post("/campaigns", status_code=status.HTTP_201_CREATED, response_model=CampaignOut)
def create_campaign(body: CampaignCreate, engine: EngineDep) -> CampaignOut:
    return campaign_service.create_campaign(engine, body)


@router.get(
    "/campaigns",
    response_model=list[CampaignOut],
    responses={
        200: {
            "description": 'newest first; a full page has a `Link: <...>; rel="next"` header',
            "headers": {"Link": {"schema": {"type": "string"}, "description": "next page"}},
        }
    },
)
def list_campaigns(
    engine: EngineDep,
    rate_now: RateDep,
    response: Response,
    after_id: Annotated[
        int | None,
        Query(ge=0, le=MAX_ID, description="the last id of the page before (older follow)"),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=campaign_service.MAX_PAGE)
    ] = campaign_service.DEFAULT_PAGE,
) -> list[CampaignOut]:
    """A page of campaigns, newest first (keyset paging by id)."""
    page = campaign_service.list_campaigns(
        engine, rate_now=rate_now, limit=limit, after_id=after_id
    )
    if len(page) == limit:
        response.headers["Link"] = f'</campaigns?after_id={page[-1].id}&limit={limit}>; rel="next"'
    return page


@router.get("/campaigns/{campaign_id}", response_model=CampaignOut)
def get_campaign(campaign_id: CampaignId, engine: EngineDep, rate_now: RateDep) -> CampaignOut:
    return campaign_service.get_campaign(engine, campaign_id, rate_now=rate_now)


_REFUSED = refused(
    RefusalKind.CONFLICT, conflict="not allowed in the campaign's state; nothing changed"
)


@router.post("/campaigns/{campaign_id}/start", response_model=CampaignOut, responses=_REFUSED)
def start_campaign(
    campaign_id: CampaignId, engine: EngineDep, flags: FlagsDep, body: StartBody | None = None
) -> CampaignOut:
    """Draft -> running now, or -> scheduled when `at` is in the future."""
    from workers.dispatch import wake_dispatch

    campaign = admin.start_campaign(engine, flags, campaign_id, at=body.at if body else None)
    wake_dispatch()
    return campaign


@router.post("/campaigns/{campaign_id}/pause", response_model=CampaignOut, responses=_REFUSED)
def pause_campaign(campaign_id: CampaignId, engine: EngineDep, flags: FlagsDep) -> CampaignOut:
    """No new claims; sends in flight stop before their next message."""
    return admin.pause_campaign(engine, flags, campaign_id)


@router.post("/campaigns/{campaign_id}/resume", response_model=CampaignOut, responses=_REFUSED)
def resume_campaign(campaign_id: CampaignId, engine: EngineDep, flags: FlagsDep) -> CampaignOut:
    from workers.dispatch import wake_dispatch

    campaign = admin.resume_campaign(engine, flags, campaign_id)
    wake_dispatch()
    return campaign


@router.post("/campaigns/{campaign_id}/cancel", response_model=CampaignOut, responses=_REFUSED)
def cancel_campaign(campaign_id: CampaignId, engine: EngineDep, flags: FlagsDep) -> CampaignOut:
    """As pause, then every contact not yet sent becomes canceled_by_admin."""
    return admin.cancel_campaign(engine, flags, campaign_id)


@router.post(
    "/campaigns/{campaign_id}/contacts/remove", response_model=RemoveReport, responses=_REFUSED
)
def remove_contacts(campaign_id: CampaignId, body: RemoveBody, engine: EngineDep) -> RemoveReport:
    """Draft, scheduled or paused campaigns only; one SUCCESS / NOT_FOUND / FAILURE per item."""
    return admin.remove_contacts(engine, campaign_id, ids=body.contact_ids, phones=body.phones)


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "text/csv": {"schema": {"type": "string", "format": "binary"}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
        },
    }
}


@router.post(
    "/campaigns/{campaign_id}/uploads",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadOut,
    openapi_extra=_UPLOAD_BODY,
    responses=refused(
        RefusalKind.BAD_FILE,
        RefusalKind.TOO_LARGE,
        RefusalKind.CONFLICT,
        bad_file="the file's head is refused for its content, which the schema cannot show: "
        "empty, binary, not UTF-8/UTF-16, no phone column, a template variable without its "
        "column, more than MAX_CSV_COLUMNS fields, a NUL, a malformed multipart body "
        "(`code` says which); nothing is kept",
        too_large="over MAX_UPLOAD_BYTES, counted as it arrives (or by Content-Length)",
        conflict="the campaign is not draft or paused (`upload_not_allowed`)",
    ),
    summary="Upload a contact CSV (raw body or multipart field `file`); validated by a worker",
)
async def upload_contacts(
    campaign_id: CampaignId,
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    filename: OneLine = None,
    phone_column: OneLine = None,
    region: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$")] = None,
) -> UploadOut:
    settings = runtime.settings
    content_type = request.headers.get("content-type", "")
    multipart = content_type.startswith("multipart/form-data")
    _refuse_declared_size(request, settings.max_upload_bytes, multipart)
    with uploads.SpoolWriter(settings.spool_dir, max_bytes=settings.max_upload_bytes) as writer:
        if multipart:
            part_name = await spool_multipart(content_type, request.stream(), writer)
        else:
            part_name = None
            async for block in request.stream():
                writer.write(block)
    spooled = writer.spooled()
    upload = await run_in_threadpool(
        uploads.register_upload,
        runtime.engine,
        campaign_id,
        spooled,
        filename=filename or part_name or "upload.csv",
        phone_column=phone_column,
        region=region,
        max_columns=settings.max_csv_columns,
    )
    from workers.ingest import ingest_upload

    ingest_upload.delay(upload.id)
    response.headers["Location"] = f"/uploads/{upload.id}"
    return upload


@router.post(
    "/campaigns/{campaign_id}/uploads/preview",
    response_model=UploadPreview,
    openapi_extra={
        # Not required: an empty body is previewed as an empty file (problem `empty_file`).
        "requestBody": {
            "required": False,
            "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
    summary="Preview a CSV from its first bytes, as an upload would read it; stores nothing",
)
async def preview_upload(
    campaign_id: CampaignId,
    request: Request,
    runtime: RuntimeDep,
    phone_column: OneLine = None,
    region: Annotated[str | None, Query(pattern=r"^[A-Za-z]{2}$")] = None,
    rows: Annotated[int, Query(ge=1, le=MAX_PREVIEW_ROWS)] = PREVIEW_ROWS,
    truncated: Annotated[
        bool, Query(description="the body is only the file's head (its last record may be cut)")
    ] = False,
) -> UploadPreview:
    """The body is the file, or its first 64 KiB (`truncated=true`); past 64 KiB the rest of
    the body is not read. Answers the detected encoding, delimiter and phone column, the
    column of each template variable, the first records with what the upload would make of
    each, and the problems that would refuse the upload."""
    head = bytearray()
    cut = truncated
    async for block in request.stream():
        head += block
        if len(head) > uploads.HEAD_BYTES:
            cut = True
            break
    return await run_in_threadpool(
        uploads.preview_upload,
        runtime.engine,
        campaign_id,
        bytes(head[: uploads.HEAD_BYTES]),
        complete=not cut,
        phone_column=phone_column,
        region=region,
        rows=rows,
        max_columns=runtime.settings.max_csv_columns,
    )


# A multipart body wraps the file in boundaries and part headers: this much slack over
# MAX_UPLOAD_BYTES is allowed in its Content-Length (the file part itself is counted exactly).
MULTIPART_SLACK_BYTES = 64 * 1024


def _refuse_declared_size(request: Request, max_bytes: int, multipart: bool) -> None:
    """413 before reading a byte when Content-Length already says the body is too large."""
    declared = request.headers.get("content-length", "")
    limit = max_bytes + (MULTIPART_SLACK_BYTES if multipart else 0)
    if declared.isdigit() and int(declared) > limit:
        raise UploadRefused(
            RefusalCode.TOO_LARGE, f"file is larger than the limit of {max_bytes:,} bytes"
        )


@router.get("/uploads/{upload_id}", response_model=UploadOut)
def get_upload(upload_id: UploadId, engine: EngineDep) -> UploadOut:
    return uploads.get_upload(engine, upload_id)


@router.post(
    "/uploads/{upload_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadOut,
    responses=refused(
        RefusalKind.CONFLICT,
        conflict="the upload is completed or refused (`upload_finished`), or its spooled "
        "file is gone (`upload_file_gone`)",
    ),
)
def retry_upload(upload_id: UploadId, engine: EngineDep) -> UploadOut:
    upload = uploads.mark_upload_for_retry(engine, upload_id)
    from workers.ingest import ingest_upload

    ingest_upload.delay(upload.id)
    return upload


@router.get("/campaigns/{campaign_id}/uploads", response_model=list[UploadOut])
def list_uploads(campaign_id: CampaignId, engine: EngineDep) -> list[UploadOut]:
    campaign_service.get_campaign(engine, campaign_id)
    return uploads.list_uploads(engine, campaign_id)


@router.get("/campaigns/{campaign_id}/contacts", response_model=ContactPage)
def list_contacts(
    campaign_id: CampaignId,
    engine: EngineDep,
    state: StateFilter = None,
    after_id: AfterId = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    phone: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=CONTROL_CHARS_PATTERN,
            description="one number in any format (read with the campaign's region), or the "
            "exact phone cell of a rejected row",
        ),
    ] = None,
    upload_id: UploadFilter = None,
) -> ContactPage:
    return campaign_contacts.page_contacts(
        engine,
        campaign_id,
        states=state or (),
        after_id=after_id,
        limit=limit,
        phone=phone,
        upload_id=upload_id,
    )


@router.get(
    "/campaigns/{campaign_id}/contacts.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}}},
)
def export_contacts(
    campaign_id: CampaignId,
    engine: EngineDep,
    state: StateFilter = None,
    upload_id: UploadFilter = None,
) -> StreamingResponse:
    rows = campaign_contacts.export_contacts_csv(
        engine, campaign_id, states=state or (), upload_id=upload_id
    )
    return StreamingResponse(
        rows,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign_id}-contacts.csv"'
        },
    )
