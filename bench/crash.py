"""Crash benchmark: a campaign sent through worker kills, a Redis crash and a Postgres crash
restart, then checked contact by contact against what the simulator accepted.

    python bench/crash.py [--contacts 20000] [--rate 200] [--kills 20] [--every 2-4]

A private stack (embedded Postgres + Redis under a fresh DATA_DIR in /tmp), the simulator
with its ``--demo`` failure mix (no rate limit) posting signed status webhooks to
``wa-campaigns serve``, a webhooks worker, and the dispatch worker with the beat tick, all
with ``DISPATCH_LOOP_TTL_S=5``, ``DISPATCH_LEASE_MARGIN_S=5`` and
``OUTCOME_UNKNOWN_GRACE_S=90``. While the campaign sends, the dispatch worker's whole process
group is killed -9 ``--kills`` times, every ``--every`` seconds (uniform), and started again
at once; at a third of the kills Redis is killed -9 and brought back with ``wa-campaigns dev
up``; at two thirds Postgres is restarted in immediate (crash) mode. Then the run waits for
the campaign to complete (outcome-unknown contacts wait the 90 s grace for their webhooks).

Prints one JSON line: contacts, kills, duplicates (the simulator's duplicate_count),
unsettled (contacts left Initial, In progress or Retry scheduled), phantom (contacts shown
sent, delivered, read or delivery failed whose number the simulator never accepted),
given_up_unsent (Error "outcome unknown" that the simulator never received), given_up_redis
(given up because Redis restarted; the ledger makes this impossible), outcome_unknown_sent
(outcome unknown, but the simulator did take it), accepted, counts per state, seconds, and
``limit_given_up`` (one gate group per chain per kill: ``kills x chains x group``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import time

from _stack import Stack, log, machine_load
from sqlalchemy import text

from campaigns.dev.processes import Child, cli_argv

APP_SECRET = "crash-bench-app-secret-0123456789"
SETTLED = ("sent", "delivered", "read", "delivery_failed")
PENDING = ("initial", "in_progress", "retry_scheduled")


def crash_redis(stack: Stack) -> None:
    """kill -9 of redis-server, then ``wa-campaigns dev up`` brings it back (its AOF)."""
    from campaigns.runtime.embedded import EmbeddedRedis

    EmbeddedRedis(stack.data_dir / "redis").kill()
    env = {**os.environ, "DATA_DIR": str(stack.data_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    subprocess.run(cli_argv("dev", "up"), env=env, check=True, capture_output=True)


def crash_postgres(stack: Stack) -> None:
    from campaigns.runtime.embedded import EmbeddedPostgres

    EmbeddedPostgres(stack.data_dir / "pg").restart(mode="immediate")


def chaos(stack: Stack, worker: Child, kills: int, every: tuple[float, float]) -> Child:
    rng = random.Random(16)
    for n in range(1, kills + 1):
        time.sleep(rng.uniform(*every))
        worker.kill9()  # the whole process group: the master and its pool
        stack.procs.remove(worker)
        if n == max(1, kills // 3):
            log(f"kill {n}: and Redis")
            crash_redis(stack)
        elif n == max(2, 2 * kills // 3):
            log(f"kill {n}: and Postgres (immediate)")
            crash_postgres(stack)
        else:
            log(f"kill {n}")
        worker = stack.start_worker("dispatch-worker", "dispatch", concurrency=2, beat=True)
    return worker


def figures(stack: Stack, campaign_id: int) -> dict[str, object]:
    stats = stack.sim_get("/_sim/stats")
    accepted = {d for d, n in stats["accepted_by_recipient"].items() if n}
    with stack.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT phone_e164, state, reason FROM contacts WHERE campaign_id = :c"),
            {"c": campaign_id},
        ).all()
    counts: dict[str, int] = {}
    phantom = unsettled = unsent = redis = unknown_sent = 0
    for phone, state, reason in rows:
        digits = str(phone).lstrip("+")
        counts[state] = counts.get(state, 0) + 1
        unsettled += state in PENDING
        phantom += state in SETTLED and digits not in accepted
        if state == "error" and str(reason or "").startswith("outcome unknown"):
            if digits in accepted:
                unknown_sent += 1
            else:
                unsent += 1
                redis += "Redis" in str(reason)
    return {
        "duplicates": int(stats["duplicate_count"]),
        "unsettled": unsettled,
        "phantom": phantom,
        "given_up_unsent": unsent,
        "given_up_redis": redis,
        "outcome_unknown_sent": unknown_sent,
        "accepted": int(stats["accepted_total"]),
        "counts": counts,
    }


def settings(args: argparse.Namespace) -> None:
    os.environ.update(
        {
            "DISPATCH_LOOP_TTL_S": "5",
            "DISPATCH_LEASE_MARGIN_S": "5",
            "OUTCOME_UNKNOWN_GRACE_S": str(args.grace),
            "WHATSAPP_APP_SECRET": APP_SECRET,
            "WHATSAPP_VERIFY_TOKEN": "crash-bench",
        }
    )


def wait_completed(stack: Stack, campaign_id: int, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while True:
        try:
            if stack.campaign_status(campaign_id) == "completed":
                return
        except Exception as exc:  # Postgres coming back
            log(f"status not readable yet: {exc}")
        if time.time() > deadline:
            raise RuntimeError(f"not completed in time: {stack.counts(campaign_id)}")
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--every", default="2-4", help="seconds between kills: LOW-HIGH")
    parser.add_argument("--grace", type=float, default=90.0, help="OUTCOME_UNKNOWN_GRACE_S")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (logs)")
    args = parser.parse_args()
    low, high = (float(x) for x in args.every.split("-"))
    load = machine_load()
    settings(args)
    from campaigns.domain.dispatch import group_size
    from campaigns.runtime.config import get_settings
    from campaigns.services import admin
    from workers.dispatch import wake_dispatch

    chains = get_settings().dispatch_parallel_batches
    with Stack("crash", keep=args.keep) as stack:
        api = stack.start_api()
        stack.start_simulator(
            rate=0, demo=True, webhook_url=f"{api}/webhooks/whatsapp", app_secret=APP_SECRET
        )
        stack.start_worker("webhooks-worker", "webhooks", concurrency=1, beat=False)
        worker = stack.start_worker("dispatch-worker", "dispatch", concurrency=2, beat=True)
        campaign_id = stack.campaign_with_contacts(args.contacts, rate=args.rate, number_base=0)
        started = time.time()
        admin.start_campaign(stack.engine, stack.flags(), campaign_id)
        wake_dispatch()
        chaos(stack, worker, args.kills, (low, high))
        log("chaos over; waiting for the campaign to complete")
        wait_completed(stack, campaign_id, args.contacts / args.rate * 3 + args.grace + 300)
        seconds = time.time() - started
        time.sleep(5)  # the last status webhooks
        result = figures(stack, campaign_id)
    print(
        json.dumps(
            {
                "contacts": args.contacts,
                "rate": args.rate,
                "kills": args.kills,
                **result,
                "limit_given_up": args.kills * chains * group_size(args.rate),
                "seconds": round(seconds, 1),
                "load_1m_at_start": load,
            }
        )
    )


if __name__ == "__main__":
    main()
