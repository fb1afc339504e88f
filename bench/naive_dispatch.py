"""The naive design that ``bench/dispatch.py`` compares against: one Celery task per message.

Its own tiny Celery app on the same Redis broker, queue ``naive``. Each task loads its contact
(and its campaign's template) by id, posts one template message with a synchronous httpx
client, updates the contact row (Sent + wamid, or Error) with its event, and commits.

Run by the benchmark as::

    cd bench && python -m celery -A naive_dispatch worker -Q naive -c 2 -P prefork

Given every benefit of the doubt, so the comparison is a lower bound of our advantage:
a kept-alive ``httpx.Client`` per process (not ``httpx.post``, which opens a connection per
call), a plain connection pool without pre-ping, WARNING log level and no task events.
Environment: ``REDIS_URL``, ``DATABASE_URL`` (SQLAlchemy URL), ``WHATSAPP_API_URL``,
``WHATSAPP_TOKEN``, ``WHATSAPP_PHONE_NUMBER_ID``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx
from celery import Celery
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from campaigns.clients.whatsapp import build_template_payload, parse_response  # noqa: E402

QUEUE = "naive"

app = Celery("naive_dispatch", broker=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
app.conf.update(
    task_default_queue=QUEUE,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

# Per process, created lazily in the forked child (never shared with the parent).
_state: dict[str, object] = {}


def _engine() -> Engine:
    engine = _state.get("engine")
    if engine is None:
        engine = _state["engine"] = create_engine(os.environ["DATABASE_URL"], pool_size=2)
    assert isinstance(engine, Engine)
    return engine


def _http() -> httpx.Client:
    client = _state.get("http")
    if client is None:
        client = _state["http"] = httpx.Client(timeout=10.0)
    assert isinstance(client, httpx.Client)
    return client


_LOAD = text(
    "SELECT c.phone_e164, c.variables, k.template_name, k.template_language, k.body_variables,"
    " coalesce(k.phone_number_id, :default_sender) AS sender "
    "FROM contacts c JOIN campaigns k ON k.id = c.campaign_id WHERE c.id = :id"
)
_SENT = text(
    "UPDATE contacts SET state = 'sent', attempts = attempts + 1, wamid = :wamid,"
    " wa_id = :wa_id, sent_at = now(), updated_at = now() WHERE id = :id"
)
_FAILED = text(
    "UPDATE contacts SET state = 'error', attempts = attempts + 1, error_code = :code,"
    " finished_at = now(), updated_at = now() WHERE id = :id"
)
_EVENT = text(
    "INSERT INTO contact_events (contact_id, campaign_id, from_state, to_state, source)"
    " SELECT id, campaign_id, 'initial', state, 'naive' FROM contacts WHERE id = :id"
)


@app.task(name="naive.send_one")  # type: ignore[untyped-decorator]
def send_one(contact_id: int) -> None:
    engine = _engine()
    with engine.connect() as conn:
        row = (
            conn.execute(
                _LOAD,
                {"id": contact_id, "default_sender": os.environ["WHATSAPP_PHONE_NUMBER_ID"]},
            )
            .mappings()
            .one()
        )
    variables = row["variables"] or {}
    payload = build_template_payload(
        to_e164=row["phone_e164"],
        template=row["template_name"],
        language=row["template_language"],
        body_params=[variables.get(name, "") for name in row["body_variables"] or ()],
        callback_data=f"naive-{contact_id}",
    )
    base = os.environ["WHATSAPP_API_URL"].rstrip("/")
    response = _http().post(
        f"{base}/v21.0/{row['sender']}/messages",
        json=payload,
        headers={"Authorization": f"Bearer {os.environ['WHATSAPP_TOKEN']}"},
    )
    result = parse_response(response.status_code, response.content)
    with engine.begin() as conn:
        if result.wamid:
            conn.execute(_SENT, {"id": contact_id, "wamid": result.wamid, "wa_id": result.wa_id})
        else:
            conn.execute(_FAILED, {"id": contact_id, "code": result.error_code})
        conn.execute(_EVENT, {"id": contact_id})
