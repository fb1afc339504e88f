"""Straggler benchmark: a campaign's rate when 1% of its requests hang until the client's
timeout, against the same campaign without stragglers, in one run.

    python bench/stragglers.py [--contacts 20000] [--rate 500] [--timeout 10]

A private stack (embedded Postgres + Redis under a fresh DATA_DIR in /tmp), the simulator
with its limit off, ``wa-campaigns worker -Q dispatch --beat -c 2`` with
``WHATSAPP_TIMEOUT_S=--timeout``. Campaign A (no stragglers) and then campaign B
(``timeout_share=0.01``: the simulator takes the message and holds its answer longer than the
client waits) send ``--contacts`` each at ``--rate``. Each one's rate is taken over the middle
90% of its sends, from the send ledger's start marks (when each group passed the start
statement, right before it left). A request that hangs must hold up only its own contact.

Prints one JSON line: rate_with, rate_without, ratio (with over without; target >= 0.95),
rate_target, with_pct / without_pct (of the target), contacts, timeout_s, stragglers (B's
contacts whose answer never came), duplicates, load_1m_at_start.
"""

from __future__ import annotations

import argparse
import json
import os
import time

from _stack import Stack, log, machine_load, middle_rate


def run(stack: Stack, contacts: int, rate: float, *, number_base: int, name: str) -> list[float]:
    """Starts a campaign and waits until every contact has been started; its send times."""
    from campaigns.services import admin
    from workers.dispatch import wake_dispatch

    campaign_id = stack.campaign_with_contacts(
        contacts, rate=rate, number_base=number_base, name=name
    )
    admin.start_campaign(stack.engine, stack.flags(), campaign_id)
    wake_dispatch()
    started = time.time()
    deadline = started + max(120.0, 3 * contacts / rate)
    while True:
        times = stack.send_starts(campaign_id)
        if len(times) >= contacts:
            break
        if time.time() > deadline:
            raise RuntimeError(f"{name}: {len(times)} of {contacts} started in time")
        time.sleep(0.5)
    log(f"{name}: {contacts} sent in {times[-1] - times[0]:.1f} s")
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--timeout", type=float, default=10.0, help="WHATSAPP_TIMEOUT_S")
    parser.add_argument("--share", type=float, default=0.01, help="share of hanging requests")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (logs)")
    args = parser.parse_args()
    load = machine_load()
    os.environ["WHATSAPP_TIMEOUT_S"] = str(args.timeout)
    with Stack("stragglers", keep=args.keep) as stack:
        stack.start_simulator(rate=0, settings={"timeout_hang_s": args.timeout * 3})
        stack.start_dispatch_worker(concurrency=2, beat=True)
        without = run(stack, args.contacts, args.rate, number_base=0, name="without")
        stack.sim_config(timeout_share=args.share)
        with_ = run(stack, args.contacts, args.rate, number_base=100_000_000, name="with")
        time.sleep(min(args.timeout, 15.0))  # the last stragglers time out
        stats = stack.sim_stats()
        answered = int(stats["accepted_total"])
    rate_with, rate_without = middle_rate(with_), middle_rate(without)
    print(
        json.dumps(
            {
                "rate_with": round(rate_with, 1),
                "rate_without": round(rate_without, 1),
                "ratio": round(rate_with / rate_without, 3) if rate_without else None,
                "rate_target": args.rate,
                "with_pct": round(100 * rate_with / args.rate, 1),
                "without_pct": round(100 * rate_without / args.rate, 1),
                "contacts": args.contacts,
                "timeout_s": args.timeout,
                "straggler_share": args.share,
                "accepted": answered,
                "duplicates": int(stats["duplicate_count"]),
                "load_1m_at_start": load,
            }
        )
    )


if __name__ == "__main__":
    main()
