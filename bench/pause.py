"""Pause benchmark: time from a pause command returning to the last send that starts after it.

    python bench/pause.py [--runs 5] [--rate 1000] [--warm 3] [--settle 3]

A private stack (embedded Postgres + Redis under a fresh DATA_DIR in /tmp), the simulator
with its limit off, ``wa-campaigns worker -Q dispatch --beat -c 2``. One campaign sends at
``--rate``; after ``--warm`` seconds of sending, ``services.admin.pause_campaign`` (what the
CLI and ``POST /campaigns/{id}/pause`` call) runs in this process and the time it returns is
noted. The simulator's ``accepted_total`` (counted when a request arrives) is read just before
the pause and then every few milliseconds for ``--settle`` seconds; a send that arrived after
the pause shows as an increase between two reads, so the end of the read that first shows
the last increase is an upper bound of that send's start. Then resume, and again.
For context, ``last_gate_pass_s`` is when the last message passed the start statement (its
group's durable start mark in Postgres, which checks that the campaign is still running),
relative to the pause returning: negative when it passed before.

Prints one JSON line: runs (seconds per run), max_s, p50_s, target_s (1.0), plus the answers
that came back after the pause returned (from ``sent_at``), contacts left In progress after
each pause (must be 0), and the simulator's duplicate count (must be 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _stack import Stack, log, machine_load
from sqlalchemy import text


def wait_for_sending(stack: Stack, timeout_s: float = 30.0) -> None:
    base = stack.sim_accepted()
    deadline = time.time() + timeout_s
    while stack.sim_accepted() == base:
        if time.time() > deadline:
            raise RuntimeError("no send within 30 s of start/resume")
        time.sleep(0.01)


def answers_after(stack: Stack, campaign_id: int, at: float) -> tuple[int, float | None]:
    """Sends answered after ``at`` (unix time) and the latest sent_at, from Postgres."""
    with stack.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE sent_at > to_timestamp(:t)),"
                " extract(epoch FROM max(sent_at)) FROM contacts WHERE campaign_id = :c"
            ),
            {"c": campaign_id, "t": at},
        ).one()
    return int(row[0]), None if row[1] is None else float(row[1])


def last_gate_pass(stack: Stack, campaign_id: int, since: float) -> float | None:
    """Unix time the last send of the campaign passed the start statement (the send
    ledger's start mark, right before its group left)."""
    with stack.engine.connect() as conn:
        value = conn.execute(
            text(
                "SELECT extract(epoch FROM max(send_started_at)) FROM contacts"
                " WHERE campaign_id = :c AND send_started_at > to_timestamp(:t)"
            ),
            {"c": campaign_id, "t": since},
        ).scalar_one()
    return None if value is None else float(value)


def one_pause(stack: Stack, campaign_id: int, settle_s: float) -> dict[str, float | int]:
    from campaigns.services import admin

    before = stack.sim_accepted()
    called = time.time()
    admin.pause_campaign(stack.engine, stack.flags(), campaign_id)
    returned = time.time()
    last_value, bound = before, 0.0
    while time.time() < returned + settle_s:
        value = stack.sim_accepted()
        read_end = time.time()
        if value != last_value:
            bound = read_end - returned  # the send that made the change began before this
            last_value = value
        time.sleep(0.005)
    late_answers, max_sent_at = answers_after(stack, campaign_id, returned)
    gate = last_gate_pass(stack, campaign_id, returned - 30)
    in_progress = stack.counts(campaign_id).get("in_progress", 0)
    return {
        "last_send_start_s": bound,
        # Negative: the last message passed the pause check before the pause returned.
        "last_gate_pass_s": float("nan") if gate is None else gate - returned,
        "pause_call_s": returned - called,
        "accepted_after_pause_read": last_value - before,
        "answers_after_return": late_answers,
        "max_sent_at_after_return_s": max(0.0, (max_sent_at or returned) - returned),
        "in_progress_after": in_progress,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--warm", type=float, default=3.0, help="seconds of sending first")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds watched after")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (logs)")
    args = parser.parse_args()
    load = machine_load()
    from campaigns.services import admin
    from workers.dispatch import wake_dispatch

    results: list[dict[str, float | int]] = []
    with Stack("pause", keep=args.keep) as stack:
        stack.start_simulator()
        stack.start_dispatch_worker(concurrency=2, beat=True)
        contacts = int(args.rate * args.runs * (args.warm + 3) + 1000)
        campaign_id = stack.campaign_with_contacts(contacts, rate=args.rate, number_base=0)
        log(f"campaign {campaign_id}: {contacts} contacts at {args.rate:g}/s")
        for run in range(args.runs):
            if run == 0:
                admin.start_campaign(stack.engine, stack.flags(), campaign_id)
                wake_dispatch()
            else:
                admin.resume_campaign(stack.engine, stack.flags(), campaign_id)
                wake_dispatch()
            wait_for_sending(stack)
            time.sleep(args.warm)
            result = one_pause(stack, campaign_id, args.settle)
            log(f"run {run + 1}: {result}")
            results.append(result)
        admin.cancel_campaign(stack.engine, stack.flags(), campaign_id)
        stats = stack.sim_stats()
    runs = [round(float(r["last_send_start_s"]), 3) for r in results]
    print(
        json.dumps(
            {
                "runs": runs,
                "max_s": max(runs),
                "p50_s": round(statistics.median(runs), 3),
                "target_s": 1.0,
                "rate": args.rate,
                "last_gate_pass_s": [round(float(r["last_gate_pass_s"]), 3) for r in results],
                "pause_call_s": [round(float(r["pause_call_s"]), 3) for r in results],
                "accepted_after_pause_read": [r["accepted_after_pause_read"] for r in results],
                "answers_after_return": [r["answers_after_return"] for r in results],
                "max_sent_at_after_return_s": [
                    round(float(r["max_sent_at_after_return_s"]), 3) for r in results
                ],
                "in_progress_after": [r["in_progress_after"] for r in results],
                "duplicates": int(stats["duplicate_count"]),
                "load_1m_at_start": load,
            }
        )
    )


if __name__ == "__main__":
    main()
