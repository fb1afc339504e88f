"""Rate benchmark: the configured per-sender rate vs the rate the platform sees.

    python bench/rate.py [--seconds 30] [--warmup 2] [--rates 80,1000]

A private stack (embedded Postgres + Redis under a fresh DATA_DIR in /tmp), the simulator
with its own limit off (so only our limiter paces), ``wa-campaigns worker -Q dispatch --beat
-c 2``. For each configured rate, a campaign with enough contacts for the whole window is
started; the first send the simulator accepts is t0; ``accepted_total`` is read at t0 +
warmup and again ``--seconds`` later, and the measured rate is the difference over the time
between the two reads. The campaign is then cancelled before the next rate. As a cross-check
the same window is also counted from the contacts' ``sent_at`` (when the answer came).

Prints one JSON line: configured_80, error_80_pct, configured_1000, error_1000_pct,
within_3pct (|error| < 3% for every rate), plus the sent_at cross-checks and the load.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from _stack import Stack, cpu_delta, cpu_snapshot, log, machine_busy_s, machine_load
from sqlalchemy import text


def sample(stack: Stack) -> tuple[int, float]:
    """accepted_total and the middle of the request that read it."""
    before = time.time()
    accepted = stack.sim_accepted()
    return accepted, (before + time.time()) / 2


def sent_at_rate(stack: Stack, campaign_id: int, warmup: float, seconds: float) -> float:
    """The same window from the contacts' sent_at: [first + warmup, first + warmup + seconds)."""
    with stack.engine.connect() as conn:
        count = conn.execute(
            text(
                "WITH f AS (SELECT min(sent_at) AS t FROM contacts WHERE campaign_id = :c) "
                "SELECT count(*) FROM contacts, f WHERE campaign_id = :c "
                "AND sent_at >= f.t + make_interval(secs => :w) "
                "AND sent_at < f.t + make_interval(secs => :w + :s)"
            ),
            {"c": campaign_id, "w": warmup, "s": seconds},
        ).scalar_one()
    return int(count) / seconds


def measure(
    stack: Stack, rate: float, seconds: float, warmup: float, number_base: int
) -> tuple[float, float, float]:
    """(measured rate, the sent_at cross-check, other processes' busy cores in the window)."""
    from campaigns.services import admin
    from workers.dispatch import wake_dispatch

    contacts = math.ceil(rate * (seconds + warmup + 10))
    campaign_id = stack.campaign_with_contacts(
        contacts, rate=rate, number_base=number_base, sender=f"55{int(rate)}", name=f"r{rate:g}"
    )
    log(f"rate {rate:g}/s: campaign {campaign_id} with {contacts} contacts")
    base, _ = sample(stack)
    admin.start_campaign(stack.engine, stack.flags(), campaign_id)
    wake_dispatch()  # as the CLI and API do after start
    deadline = time.time() + 30
    while True:
        accepted, t0 = sample(stack)
        if accepted > base:
            break
        if time.time() > deadline:
            raise RuntimeError("nothing was sent within 30 s of the start")
        time.sleep(0.005)
    time.sleep(max(0.0, t0 + warmup - time.time()))
    a, ta = sample(stack)
    cpu_before, busy_before = cpu_snapshot(stack), machine_busy_s()
    time.sleep(max(0.0, ta + seconds - time.time()))
    b, tb = sample(stack)
    cpu = cpu_delta(cpu_before, cpu_snapshot(stack))
    ours = sum(cpu.values())
    others_cores = (machine_busy_s() - busy_before - ours) / (tb - ta)
    measured = (b - a) / (tb - ta)
    counts = stack.counts(campaign_id)
    if counts.get("initial", 0) == 0:
        raise RuntimeError(f"contacts ran out before the window ended: {counts}")
    admin.cancel_campaign(stack.engine, stack.flags(), campaign_id)
    while stack.counts(campaign_id).get("in_progress", 0):
        time.sleep(0.2)  # claimed batches give their unsent contacts back
    cross = sent_at_rate(stack, campaign_id, warmup, seconds)
    log(
        f"rate {rate:g}/s: measured {measured:.2f}/s (sent_at: {cross:.2f}/s) over {tb - ta:.2f} s;"
        f" our stack {ours / (tb - ta):.2f} cores, other processes {others_cores:.2f} cores;"
        f" CPU s by component {cpu}"
    )
    return measured, cross, others_cores


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rates", default="80,1000", help="comma-separated msg/s")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (logs)")
    args = parser.parse_args()
    load = machine_load()
    rates = [float(r) for r in args.rates.split(",")]
    out: dict[str, object] = {}
    errors: list[float] = []
    with Stack("rate", keep=args.keep) as stack:
        stack.start_simulator()
        stack.start_dispatch_worker(concurrency=2, beat=True)
        for index, rate in enumerate(rates):
            measured, cross, others = measure(
                stack, rate, args.seconds, args.warmup, number_base=index * 100_000_000
            )
            error = 100.0 * (measured - rate) / rate
            errors.append(error)
            out[f"configured_{rate:g}"] = round(measured, 2)
            out[f"error_{rate:g}_pct"] = round(error, 2)
            out[f"sent_at_{rate:g}"] = round(cross, 2)
            # Busy cores of processes outside this benchmark during the window (shared box).
            out[f"others_cores_{rate:g}"] = round(others, 2)
        stats = stack.sim_stats()
    out["within_3pct"] = all(abs(e) < 3.0 for e in errors)
    out["seconds"] = args.seconds
    out["duplicates"] = int(stats["duplicate_count"])
    out["load_1m_at_start"] = load
    print(json.dumps(out))


if __name__ == "__main__":
    main()
