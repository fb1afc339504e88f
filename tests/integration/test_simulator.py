"""The Cloud API simulator over real HTTP: sends, platform errors, limits and signed webhooks.

The simulator runs in a background thread (``RunningSimulator``), a tiny aiohttp receiver in
another; the tests drive them with httpx. No Postgres or Redis needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from campaigns.dev.simulator import OutcomeKind, OutcomeRules, RunningSimulator, SimulatorConfig
from schemas.whatsapp import (
    SIGNATURE_HEADER,
    ErrorResponse,
    SendResponse,
    WebhookPayload,
    verify_signature,
)

TOKEN = "test-token"
SECRET = "test-app-secret"
PNID = "1234567890"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --------------------------------------------------------------------------- helpers


class Receiver:
    """Records webhook POSTs; can answer 500 to the first ``fail_first`` of them."""

    def __init__(self) -> None:
        self.posts: list[tuple[bytes, dict[str, str]]] = []
        self.refused: list[bytes] = []
        self.fail_first = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhook"

    def reset(self, fail_first: int = 0) -> None:
        self.posts = []
        self.refused = []
        self.fail_first = fail_first

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if self.fail_first > 0:
            self.fail_first -= 1
            self.refused.append(body)
            return web.Response(status=500, text="boom")
        self.posts.append((body, dict(request.headers)))
        return web.Response(text="ok")

    async def _amain(self) -> None:
        app = web.Application()
        app.router.add_post("/webhook", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(runner.addresses[0][1])
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        loop.run_until_complete(self._amain())
        loop.close()

    def start(self) -> Receiver:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def payloads(self) -> list[WebhookPayload]:
        return [WebhookPayload.model_validate_json(body) for body, _ in list(self.posts)]

    def statuses(self) -> list[dict[str, Any]]:
        """Every status object received, in arrival order, with its phone number id."""
        out = []
        for payload in self.payloads():
            for pnid, status in payload.statuses():
                out.append({"pnid": pnid, **status.model_dump(by_alias=True)})
        return out


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    rec = Receiver().start()
    yield rec
    rec.stop()


def base_config(**overrides: Any) -> SimulatorConfig:
    cfg = SimulatorConfig(
        port=0,
        access_token=TOKEN,
        app_secret=SECRET,
        webhook_delay_min_s=0.01,
        webhook_delay_max_s=0.05,
        duplicate_share=0.0,
        pair_interval_s=0.0,
        webhook_retry_base_s=0.05,
        webhook_tick_s=0.01,
        seed=7,
    )
    return dataclasses.replace(cfg, **overrides)


@pytest.fixture
def sim_factory(receiver: Receiver) -> Iterator[Callable[..., RunningSimulator]]:
    started: list[RunningSimulator] = []

    def make(webhooks: bool = False, **overrides: Any) -> RunningSimulator:
        if webhooks:
            receiver.reset(overrides.pop("fail_first", 0))
            overrides.setdefault("webhook_url", receiver.url)
        sim = RunningSimulator(base_config(**overrides)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


def body_for(
    to: str, biz: str | None = None, template: str = "bf_offer", n_params: int = 1
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": template,
            "language": {"code": "en"},
            "components": [
                {
                    "type": "body",
                    "parameters": [{"type": "text", "text": f"p{i}"} for i in range(n_params)],
                }
            ],
        },
    }
    if biz is not None:
        body["biz_opaque_callback_data"] = biz
    return body


def send(
    client: httpx.Client, sim: RunningSimulator, to: str, pnid: str = PNID, **kw: Any
) -> httpx.Response:
    return client.post(f"{sim.api_url}/{pnid}/messages", json=body_for(to, **kw), headers=AUTH)


def error_code(resp: httpx.Response) -> int:
    return ErrorResponse.model_validate_json(resp.content).error.code


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as c:
        yield c


# --------------------------------------------------------------------------- sends


def test_success_shape_and_unique_wamids(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory()
    numbers = [f"4915100001{i:03d}" for i in range(20)]
    wamids = []
    for i, number in enumerate(numbers):
        to = "+" + number if i % 2 else number
        resp = send(client, sim, to, biz=f"att-{i}")
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"].startswith("application/json")
        parsed = SendResponse.model_validate_json(resp.content)
        assert parsed.messaging_product == "whatsapp"
        assert parsed.contacts[0].input == to
        assert parsed.contacts[0].wa_id == number
        assert parsed.messages[0].message_status == "accepted"
        assert parsed.wamid.startswith("wamid.")
        wamids.append(parsed.wamid)
    assert len(set(wamids)) == 20
    stats = client.get(f"{sim.base_url}/_sim/stats").json()
    assert stats["accepted_total"] == 20
    assert stats["requests_total"] == 20
    assert stats["accepted_by_recipient"] == {n: 1 for n in numbers}
    assert stats["duplicates"] == [] and stats["duplicate_count"] == 0
    assert stats["rejected_by_code"] == {}
    assert stats["webhooks_posted"] == 0 and stats["webhooks_pending"] == 0
    # any version in the path is accepted
    resp = client.post(
        f"{sim.base_url}/v19.0/{PNID}/messages", json=body_for("4915100001999"), headers=AUTH
    )
    assert resp.status_code == 200


def test_undeliverable_recipient_gets_131026(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory(outcomes=OutcomeRules(undeliverable_share=0.1))
    bad = send(client, sim, "4915100002005")
    assert bad.status_code == 400
    err = ErrorResponse.model_validate_json(bad.content).error
    assert err.code == 131026
    assert err.error_subcode == 2494010
    assert err.type == "OAuthException"
    assert err.message.startswith("(#131026)")
    assert err.error_data is not None and err.error_data.messaging_product == "whatsapp"
    assert err.details
    assert err.fbtrace_id
    again = send(client, sim, "4915100002005")  # final: the same on every attempt
    assert (again.status_code, error_code(again)) == (400, 131026)
    good = send(client, sim, "4915100002010")
    assert good.status_code == 200
    stats = sim.stats()
    assert stats["rejected_by_code"] == {"131026": 2}
    assert stats["accepted_by_recipient"] == {"4915100002010": 1}


def test_explicit_codes_per_recipient(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory(
        outcomes=OutcomeRules(explicit={"4915100002100": 131050, "4915100002101": 80007})
    )
    r1 = send(client, sim, "4915100002100")
    r2 = send(client, sim, "4915100002101")
    assert (r1.status_code, error_code(r1)) == (400, 131050)
    assert (r2.status_code, error_code(r2)) == (429, 80007)
    assert sim.stats()["accepted_total"] == 0


def test_bad_token_gets_190(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory()
    url = f"{sim.api_url}/{PNID}/messages"
    for headers in ({"Authorization": "Bearer wrong"}, {}, {"Authorization": TOKEN}):
        resp = client.post(url, json=body_for("4915100003000"), headers=headers)
        assert resp.status_code == 401
        assert error_code(resp) == 190
    assert sim.stats()["rejected_by_code"] == {"190": 3}
    assert sim.stats()["accepted_total"] == 0


def test_bad_body_gets_100(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory()
    url = f"{sim.api_url}/{PNID}/messages"
    no_to = body_for("4915100004000")
    del no_to["to"]
    json_headers = {**AUTH, "Content-Type": "application/json"}
    for raw in (
        json.dumps(no_to).encode(),
        b"{not json",
        json.dumps(body_for("abc")).encode(),  # no digits in "to"
        json.dumps({**body_for("4915100004000"), "template": {"name": "x"}}).encode(),
    ):
        resp = client.post(url, headers=json_headers, content=raw)
        assert resp.status_code == 400, resp.text
        err = ErrorResponse.model_validate_json(resp.content).error
        assert err.code == 100
        assert err.details
    assert sim.stats()["rejected_by_code"] == {"100": 4}


def test_missing_template_and_param_count(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory(missing_templates=frozenset({"gone"}), template_param_counts={"bf_offer": 2})
    missing = send(client, sim, "4915100005000", template="gone")
    assert (missing.status_code, error_code(missing)) == (400, 132001)
    wrong = send(client, sim, "4915100005001", n_params=1)
    assert (wrong.status_code, error_code(wrong)) == (400, 132000)
    right = send(client, sim, "4915100005002", n_params=2)
    assert right.status_code == 200
    assert sim.stats()["rejected_by_code"] == {"132000": 1, "132001": 1}


def test_rate_limit_130429_per_phone_number_id(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory(rate_per_second=5.0)
    numbers = [f"49151000060{i:02d}" for i in range(15)]
    started = time.monotonic()
    responses = [send(client, sim, n) for n in numbers]
    elapsed = time.monotonic() - started
    codes = [r.status_code for r in responses]
    ok = codes.count(200)
    assert codes[:5] == [200] * 5  # burst = rate = 5
    assert ok <= 5 + int(elapsed * 5) + 1, (codes, elapsed)  # refill at 5/s, no more
    assert ok < 15
    assert {error_code(r) for r in responses if r.status_code != 200} == {130429}
    assert {r.status_code for r in responses if r.status_code != 200} == {429}
    other_number = send(client, sim, "4915100006098", pnid="999")  # its own bucket
    assert other_number.status_code == 200
    time.sleep(0.45)  # ~2 tokens back at 5/s
    assert send(client, sim, "4915100006097").status_code == 200
    stats = sim.stats()
    assert stats["rejected_by_code"] == {"130429": 15 - ok}
    accepted = stats["accepted_by_recipient"]
    assert sum(accepted.get(n, 0) for n in numbers) == ok
    assert stats["accepted_total"] == ok + 2


def test_pair_rate_131056(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory(pair_interval_s=0.4)
    number = "4915100007000"
    assert send(client, sim, number).status_code == 200
    second = send(client, sim, number)
    assert (second.status_code, error_code(second)) == (429, 131056)
    assert send(client, sim, "4915100007001").status_code == 200  # other recipients go on
    time.sleep(0.45)
    assert send(client, sim, number).status_code == 200
    stats = sim.stats()
    assert stats["accepted_by_recipient"][number] == 2
    assert stats["duplicates"] == [number]
    assert stats["duplicate_count"] == 1 and stats["duplicate_sends"] == 1
    assert stats["rejected_by_code"] == {"131056": 1}


def test_server_error_then_success_on_retry(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory(outcomes=OutcomeRules(server_error_share=0.1))
    first = send(client, sim, "4915100008003")
    assert first.status_code == 500
    assert error_code(first) == 131000
    second = send(client, sim, "4915100008003")
    assert second.status_code == 200
    assert send(client, sim, "4915100008050").status_code == 200  # outside the 5xx bucket
    stats = sim.stats()
    assert stats["rejected_by_code"] == {"131000": 1}
    assert stats["accepted_by_recipient"] == {"4915100008003": 1, "4915100008050": 1}


def test_timeout_outcome_accepts_then_hangs(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver
) -> None:
    sim = sim_factory(webhooks=True, outcomes=OutcomeRules(timeout_share=0.1), timeout_hang_s=3.0)
    number = "4915100009004"
    started = time.monotonic()
    with httpx.Client(timeout=0.5) as short, pytest.raises(httpx.ReadTimeout):
        send(short, sim, number, biz="att-timeout")
    assert time.monotonic() - started < 2.0
    stats = sim.stats()
    assert stats["accepted_total"] == 1 and stats["timeouts_total"] == 1
    assert stats["accepted_by_recipient"] == {number: 1}
    # the platform took it: its webhooks arrive, matched by the callback data
    wait_until(lambda: any(s["status"] == "delivered" for s in receiver.statuses()))
    assert {s["biz_opaque_callback_data"] for s in receiver.statuses()} == {"att-timeout"}
    # a blind re-send is answered at once and shows up as a duplicate send
    with httpx.Client(timeout=2.0) as c:
        assert send(c, sim, number).status_code == 200
    assert sim.stats()["duplicates"] == [number]


# --------------------------------------------------------------------------- webhooks


def test_webhooks_signed_with_callback_data_and_all_statuses(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    sim = sim_factory(webhooks=True, outcomes=OutcomeRules(read_share=0.5))
    sent: dict[str, tuple[str, str]] = {}  # wamid -> (number, biz)
    for i in range(6):
        number = f"491510001{'00' if i < 3 else '99'}{i:02d}"  # m=00 read, m=99 not read
        resp = send(client, sim, number, biz=f"att-{i}")
        assert resp.status_code == 200
        sent[SendResponse.model_validate_json(resp.content).wamid] = (number, f"att-{i}")
    expected_total = 3 * 3 + 3 * 2
    wait_until(lambda: len(receiver.statuses()) >= expected_total)
    wait_until(lambda: sim.stats()["webhooks_pending"] == 0)

    for body, headers in receiver.posts:
        assert headers["Content-Type"] == "application/json"
        assert verify_signature(body, headers[SIGNATURE_HEADER], SECRET)
        assert not verify_signature(body, headers[SIGNATURE_HEADER], "another-secret")
        payload = json.loads(body)
        assert payload["object"] == "whatsapp_business_account"
        change = payload["entry"][0]["changes"][0]
        assert change["field"] == "messages"
        assert change["value"]["metadata"]["phone_number_id"] == PNID

    statuses = receiver.statuses()
    assert len(statuses) == expected_total
    by_wamid: dict[str, set[str]] = {}
    for s in statuses:
        number, biz = sent[s["id"]]
        assert s["recipient_id"] == number
        assert s["biz_opaque_callback_data"] == biz
        assert s["timestamp"].isdigit()
        assert s["errors"] == []
        if s["status"] in ("sent", "delivered"):
            assert s["conversation"]["origin"]["type"] == "marketing"
            assert s["pricing"]["category"] == "marketing"
        by_wamid.setdefault(s["id"], set()).add(s["status"])
    for wamid, (number, _) in sent.items():
        read = number[-4:-2] == "00"
        assert by_wamid[wamid] == ({"sent", "delivered", "read"} if read else {"sent", "delivered"})
    stats = sim.stats()
    assert stats["webhooks_posted"] == len(receiver.posts)
    assert stats["webhook_statuses_posted"] == expected_total
    assert stats["webhooks_failed"] == 0 and stats["webhooks_given_up"] == 0


def test_delivery_failed_later(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    sim = sim_factory(webhooks=True, outcomes=OutcomeRules(delivery_fail_share=0.1))
    resp = send(client, sim, "4915100011007", biz="att-fail")
    assert resp.status_code == 200  # accepted first ...
    wamid = SendResponse.model_validate_json(resp.content).wamid
    wait_until(lambda: len(receiver.statuses()) >= 2)
    wait_until(lambda: sim.stats()["webhooks_pending"] == 0)
    statuses = receiver.statuses()
    assert sorted(s["status"] for s in statuses) == ["failed", "sent"]  # ... never delivered
    failed = next(s for s in statuses if s["status"] == "failed")
    assert failed["id"] == wamid
    sent = next(s for s in statuses if s["status"] == "sent")
    assert sent["biz_opaque_callback_data"] == "att-fail"
    assert failed["biz_opaque_callback_data"] is None  # echoed on sent, delivered, read only
    assert failed["errors"][0]["code"] == 131049
    assert failed["errors"][0]["error_data"]["details"]


def test_duplicates_reordering_and_batching(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    sim = sim_factory(
        webhooks=True,
        duplicate_share=1.0,
        reorder=True,
        webhook_delay_min_s=0.05,
        webhook_delay_max_s=0.3,
        outcomes=OutcomeRules(read_share=1.0),
    )
    n = 30
    for i in range(n):
        assert send(client, sim, f"49151000120{i:02d}", biz=f"b{i}").status_code == 200
    wait_until(lambda: len(receiver.statuses()) >= n * 3 * 2, timeout=8)
    wait_until(lambda: sim.stats()["webhooks_pending"] == 0)
    statuses = receiver.statuses()
    copies = Counter((s["id"], s["status"]) for s in statuses)
    assert len(copies) == n * 3
    assert set(copies.values()) == {2}  # every status posted twice (duplicate_share=1)
    rank = {"sent": 0, "delivered": 1, "read": 2}
    first_seen: dict[str, list[str]] = {}
    stamps: dict[str, dict[str, int]] = {}
    for s in statuses:
        seen = first_seen.setdefault(s["id"], [])
        if s["status"] not in seen:
            seen.append(s["status"])
        stamps.setdefault(s["id"], {})[s["status"]] = int(s["timestamp"])
    out_of_order = [w for w, seq in first_seen.items() if seq != sorted(seq, key=rank.__getitem__)]
    assert out_of_order, "reorder=True should post some statuses out of order"
    for ts in stamps.values():  # timestamps stay logical whatever the arrival order
        assert ts["sent"] <= ts["delivered"] <= ts["read"]
    sizes = [len(WebhookPayload.model_validate_json(b).statuses()) for b, _ in receiver.posts]
    assert max(sizes) > 1, "statuses falling due together are batched"
    assert len(receiver.posts) < len(statuses)


def test_in_order_when_reorder_is_off(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    sim = sim_factory(
        webhooks=True,
        reorder=False,
        webhook_delay_min_s=0.02,
        webhook_delay_max_s=0.2,
        outcomes=OutcomeRules(read_share=1.0),
    )
    for i in range(15):
        assert send(client, sim, f"49151000130{i:02d}").status_code == 200
    wait_until(lambda: len(receiver.statuses()) >= 45)
    order: dict[str, list[str]] = {}
    for s in receiver.statuses():
        order.setdefault(s["id"], []).append(s["status"])
    assert len(order) == 15
    assert all(seq == ["sent", "delivered", "read"] for seq in order.values()), order


def test_webhooks_retried_when_receiver_fails(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    sim = sim_factory(webhooks=True, fail_first=3, outcomes=OutcomeRules(read_share=0.0))
    for i in range(3):
        assert send(client, sim, f"49151000149{i:02d}", biz=f"r{i}").status_code == 200
    wait_until(lambda: len(receiver.statuses()) >= 6)
    wait_until(lambda: sim.stats()["webhooks_pending"] == 0)
    assert len(receiver.refused) == 3
    refused_ids = {
        (s.id, s.status)
        for body in receiver.refused
        for _, s in WebhookPayload.model_validate_json(body).statuses()
    }
    delivered_ids = {(s["id"], s["status"]) for s in receiver.statuses()}
    assert refused_ids and refused_ids <= delivered_ids  # nothing refused was dropped
    assert len(delivered_ids) == 6
    stats = sim.stats()
    assert stats["webhooks_failed"] == 3
    assert stats["webhooks_given_up"] == 0


def test_unreachable_receiver_is_counted_not_silently_dropped(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory(
        webhook_url="http://127.0.0.1:9/nowhere",  # discard port: connection refused
        webhook_max_tries=3,
        webhook_retry_base_s=0.02,
        outcomes=OutcomeRules(read_share=0.0),
    )
    assert send(client, sim, "4915100015000").status_code == 200
    wait_until(lambda: sim.stats()["webhooks_given_up"] == 2)
    stats = sim.stats()
    assert stats["webhooks_pending"] == 0
    assert stats["webhooks_failed"] >= 3  # every try of every batch counts
    assert stats["webhooks_posted"] == 0


def test_inbound_message_webhook(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    sim = sim_factory(webhooks=True)
    resp = client.post(
        f"{sim.base_url}/_sim/inbound",
        json={"from": "+4915100016000", "text": "STOP", "phone_number_id": PNID},
    )
    assert resp.status_code == 200
    wait_until(lambda: len(receiver.posts) >= 1)
    body, headers = receiver.posts[0]
    assert verify_signature(body, headers[SIGNATURE_HEADER], SECRET)
    ((pnid, message),) = WebhookPayload.model_validate_json(body).inbound_messages()
    assert pnid == PNID
    assert message.from_ == "4915100016000"
    assert message.text is not None and message.text.body == "STOP"
    assert message.id == resp.json()["id"]


# --------------------------------------------------------------------------- control


def test_stats_reset_and_runtime_config(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory()
    assert send(client, sim, "4915100017000").status_code == 200
    assert client.get(f"{sim.base_url}/_sim/stats").json()["accepted_total"] == 1
    slim = client.get(f"{sim.base_url}/_sim/stats", params={"by_recipient": "0"}).json()
    assert "accepted_by_recipient" not in slim and slim["accepted_total"] == 1

    assert client.post(f"{sim.base_url}/_sim/reset").json() == {"ok": True}
    stats = client.get(f"{sim.base_url}/_sim/stats").json()
    assert stats["accepted_total"] == 0 and stats["requests_total"] == 0
    assert stats["accepted_by_recipient"] == {}

    resp = client.post(
        f"{sim.base_url}/_sim/config",
        json={"undeliverable_share": 1.0, "explicit": {"4915100017001": "success"}},
    )
    assert resp.status_code == 200
    assert resp.json()["outcomes"]["undeliverable_share"] == 1.0
    assert "access_token" not in resp.json()
    refused = send(client, sim, "4915100017002")
    assert (refused.status_code, error_code(refused)) == (400, 131026)
    assert send(client, sim, "4915100017001").status_code == 200
    bad = client.post(f"{sim.base_url}/_sim/config", json={"access_token": "x"})
    assert bad.status_code == 400
    assert (
        client.get(f"{sim.base_url}/_sim/config").json()["outcomes"]["undeliverable_share"] == 1.0
    )

    sim.update_config(rate_per_second=1.0, undeliverable_share=0.0)
    codes = [send(client, sim, f"49151000171{i:02d}").status_code for i in range(3)]
    assert codes.count(200) == 1 and codes.count(429) == 2
    assert sim.stats()["rejected_by_code"]["130429"] == 2
    assert OutcomeKind.SUCCESS.value == "success"


# --------------------------------------------------------------------------- 2026 platform


def raw_changes(receiver: Receiver) -> list[dict[str, Any]]:
    return [
        c for body, _ in receiver.posts for e in json.loads(body)["entry"] for c in e["changes"]
    ]


def test_upper_case_component_types_count_as_body(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    sim = sim_factory(template_param_counts={"bf_offer": 2})
    body = body_for("4915100020099", n_params=2)
    body["template"]["components"][0]["type"] = "BODY"
    ok = client.post(f"{sim.api_url}/{PNID}/messages", json=body, headers=AUTH)
    assert ok.status_code == 200, ok.text
    body["template"]["components"][0]["parameters"].pop()
    short = client.post(f"{sim.api_url}/{PNID}/messages", json=body, headers=AUTH)
    assert (short.status_code, error_code(short)) == (400, 132000)


@pytest.mark.parametrize("text", ["Anna\nMaria", "Anna\tMaria", "Anna     Maria"])
def test_parameters_the_platform_refuses_are_132018(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client, text: str
) -> None:
    sim = sim_factory()
    body = body_for("4915100020199")
    body["template"]["components"][0]["parameters"][0]["text"] = text
    resp = client.post(f"{sim.api_url}/{PNID}/messages", json=body, headers=AUTH)
    assert resp.status_code == 400
    error = ErrorResponse.model_validate_json(resp.content).error
    assert error.code == 132018
    assert error.details == (
        "Param text cannot have new-line/tab characters or more than 4 consecutive spaces"
    )
    assert sim.stats()["accepted_total"] == 0
    body["template"]["components"][0]["parameters"][0]["text"] = "Anna    Maria"  # 4: fine
    assert client.post(f"{sim.api_url}/{PNID}/messages", json=body, headers=AUTH).status_code == 200


@pytest.mark.parametrize("path", ["/v21.0/1234/nothing", "/nope", "/_sim/unknown"])
def test_unknown_paths_answer_a_json_error(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client, path: str
) -> None:
    sim = sim_factory()
    for method in ("GET", "POST"):
        resp = client.request(method, sim.api_url.rsplit("/v", 1)[0] + path, headers=AUTH)
        assert resp.status_code == 400
        error = ErrorResponse.model_validate_json(resp.content).error
        assert (error.code, error.error_subcode) == (100, 33)
        assert error.message.startswith(f"Unsupported {method.lower()} request")


def test_undeliverable_later_fails_by_webhook_after_an_accepted_send(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    explicit = {"4915100030001": OutcomeKind.UNDELIVERABLE_LATER}
    sim = sim_factory(
        webhooks=True, outcomes=OutcomeRules(undeliverable_later_share=0.1, explicit=explicit)
    )
    by_share = send(client, sim, "4915100030005", biz="att-share")  # bucket 05 < 10
    by_map = send(client, sim, "4915100030001", biz="att-map")  # bucket 01, and named
    fine = send(client, sim, "4915100030050", biz="att-fine")  # bucket 50: success
    assert [r.status_code for r in (by_share, by_map, fine)] == [200, 200, 200]
    wait_until(lambda: sim.stats()["webhooks_pending"] == 0 and len(receiver.statuses()) >= 4)
    failed = [s for s in receiver.statuses() if s["status"] == "failed"]
    assert sorted(s["recipient_id"] for s in failed) == ["4915100030001", "4915100030005"]
    for s in failed:
        assert s["errors"][0]["code"] == 131026
        assert s["biz_opaque_callback_data"] is None
    # nothing else came for the two failed ones: no sent, no delivered
    failed_ids = {s["id"] for s in failed}
    assert all(s["status"] == "failed" for s in receiver.statuses() if s["id"] in failed_ids)
    assert sim.stats()["accepted_total"] == 3


def test_status_webhooks_carry_contacts_pmp_pricing_and_user_ids(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    number = "4915100040099"
    rules = OutcomeRules(read_share=0.0, user_ids={number: "DE.1502576394655843"})
    sim = sim_factory(webhooks=True, outcomes=rules)
    assert send(client, sim, number, biz="att-u").status_code == 200
    wait_until(lambda: sim.stats()["webhooks_pending"] == 0 and len(receiver.statuses()) >= 2)
    for change in raw_changes(receiver):
        value = change["value"]
        assert value["contacts"] == [
            {
                "profile": {"name": "Simulated User"},
                "wa_id": number,
                "user_id": "DE.1502576394655843",
            }
        ]
        for s in value["statuses"]:
            assert s["recipient_user_id"] == "DE.1502576394655843"
            assert s["biz_opaque_callback_data"] == "att-u"
            pricing = s["pricing"]
            assert (pricing["pricing_model"], pricing["category"], pricing["type"]) == (
                "PMP",
                "marketing",
                "regular",
            )


def test_read_without_delivered(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    rules = OutcomeRules(read_share=1.0, read_without_delivered_share=0.5)
    sim = sim_factory(webhooks=True, outcomes=rules)
    skip, keep = "4915100400099", "4915100600099"  # digits[-6:-4]: 40 < 50, 60 >= 50
    for number in (skip, keep):
        assert send(client, sim, number).status_code == 200
    wait_until(lambda: sim.stats()["webhooks_pending"] == 0 and len(receiver.statuses()) >= 5)
    kinds: dict[str, set[str]] = {}
    for s in receiver.statuses():
        kinds.setdefault(s["recipient_id"], set()).add(s["status"])
    assert kinds == {skip: {"sent", "read"}, keep: {"sent", "delivered", "read"}}


def test_username_messages_and_user_preferences_are_posted(
    sim_factory: Callable[..., RunningSimulator], receiver: Receiver, client: httpx.Client
) -> None:
    sim = sim_factory(webhooks=True)
    base = sim.api_url.rsplit("/v", 1)[0]
    user = {"from_user_id": "US.13491208655302741918", "text": "STOP", "phone_number_id": PNID}
    assert client.post(f"{base}/_sim/inbound", json=user).status_code == 200
    stop = {"wa_id": "4915100050001", "value": "stop", "phone_number_id": PNID}
    resume = {"user_id": "US.42", "value": "resume", "phone_number_id": PNID}
    for pref in (stop, resume):
        assert client.post(f"{base}/_sim/user_preferences", json=pref).status_code == 200
    bad = client.post(f"{base}/_sim/user_preferences", json={"value": "maybe", "wa_id": "1"})
    assert bad.status_code == 400
    wait_until(lambda: sim.stats()["webhooks_pending"] == 0 and len(receiver.posts) >= 1)
    wait_until(lambda: sum(len(p.user_preferences()) for p in receiver.payloads()) >= 2)
    payloads = receiver.payloads()
    [(pnid, message)] = [m for p in payloads for m in p.inbound_messages()]
    assert pnid == PNID and message.from_ is None
    assert (message.from_user_id, message.body) == ("US.13491208655302741918", "STOP")
    prefs = sorted(
        (
            (p.wa_id, p.user_id, p.value, p.category)
            for pl in payloads
            for _, p in pl.user_preferences()
        ),
        key=str,
    )
    assert prefs == [
        ("4915100050001", None, "stop", "marketing_messages"),
        (None, "US.42", "resume", "marketing_messages"),
    ]


def test_explicit_map_answers_any_code(
    sim_factory: Callable[..., RunningSimulator], client: httpx.Client
) -> None:
    explicit = {"4915100060001": 131042, "4915100060002": 132018, "4915100060003": 777}
    sim = sim_factory(outcomes=OutcomeRules(explicit=explicit))
    for number, code in explicit.items():
        resp = send(client, sim, number)
        assert error_code(resp) == code
    assert sim.stats()["accepted_total"] == 0
