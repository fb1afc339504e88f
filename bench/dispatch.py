"""Dispatch benchmark: end-to-end messages/s of our pipeline vs one Celery task per message.

    python bench/dispatch.py [--contacts 100000] [--naive-contacts 10000]
                             [--capacity-rate 10000] [--profile DIR]

A private stack (embedded Postgres + Redis under a fresh DATA_DIR in /tmp), the simulator with
its rate limit off, no webhooks and no pair limit, and ``wa-campaigns worker -Q dispatch
--beat -c 2``. Three timed phases in one run:

1. **At the cap**: a campaign at ``--rate`` (1,000 msg/s, the most a campaign may be given)
   with ``--contacts`` Initial contacts (inserted in SQL) is started with the admin use case;
   timed from the start command to the last contact's ``sent_at``. Our limiter decides this
   figure: the best it can be is ``contacts / (contacts / rate + time to the first send)``.
2. **Capacity**: the same, with the campaign's cap written to its row as ``--capacity-rate``
   (10,000 by default; the API refuses more than 1,000) and the sender's limit
   (``SENDER_MAX_RATE_PER_S``) set above it, so that no bucket binds and the figure is what
   the pipeline itself carries for one sender number (``0`` skips it).
3. **Naive**: the dispatch worker stops and the naive design (``bench/naive_dispatch.py``: a
   task per message, prefork, concurrency 2) sends a fresh campaign of ``min(contacts,
   naive-contacts)`` contacts, timed from the first to the last ``sent_at``.

Prints one JSON line: contacts, ``msgs_per_s`` (the pipeline's capacity per sender number,
phase 2; phase 1's figure when phase 2 is skipped), ``at_cap_msgs_per_s`` and
``at_cap_pct`` (phase 1, and its share of the configured rate), naive_msgs_per_s, ``ratio``
(capacity over naive) and ``at_cap_ratio``, duplicates (the simulator's duplicate_count over
both of our runs), plus: seconds, the CPU seconds per component during the at-cap run, CPU
per message of the whole stack for each phase and ``cpu_ratio`` (naive over ours at the cap:
unlike ``ratio`` it does not depend on what else runs on the machine, which is shared), the
busy CPU seconds of other processes in each phase, the limiter's waits and the
accepted-per-second deciles from the workers' telemetry.
``--profile DIR`` records the dispatch worker (and its prefork children) during the at-cap
phase with py-spy (``pip install py-spy``; ``--gil``: samples of threads on the CPU only, not
of threads waiting for the GIL) into DIR as a raw collapsed-stack file (speedscope opens it).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from _stack import (
    BENCH,
    Stack,
    cpu_delta,
    cpu_snapshot,
    log,
    machine_busy_s,
    machine_load,
    middle_rate,
    telemetry,
)
from sqlalchemy import text

RATE = 1000.0  # the most a campaign may be given (schemas.api.CampaignCreate)
CAPACITY_RATE = 10_000.0  # far above what two cores carry: the limiter never binds


@dataclass
class Run:
    campaign_id: int
    sent: int
    seconds: float
    first_send_s: float
    accepted: int
    duplicates: int
    counts: dict[str, int] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, object] = field(default_factory=dict)
    stack_cpu_ms_per_msg: float = 0.0  # workers + simulator + Postgres + Redis, per message
    steady_msgs_per_s: float = 0.0  # over the middle 90% of the start marks (no ramp, no tail)

    @property
    def msgs_per_s(self) -> float:
        return self.sent / self.seconds


def last_sent_at(stack: Stack, campaign_id: int) -> tuple[int, float, float]:
    """(sent contacts, first and last sent_at as unix time) of a campaign."""
    with stack.engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*), extract(epoch FROM min(sent_at)),"
                " extract(epoch FROM max(sent_at))"
                " FROM contacts WHERE campaign_id = :c AND state = 'sent'"
            ),
            {"c": campaign_id},
        ).one()
    return int(row[0]), float(row[1] or 0.0), float(row[2] or 0.0)


def stack_cpu_ms_per_msg(cpu: dict[str, float], messages: int) -> float:
    """CPU of this run's own processes (workers, simulator, Postgres, Redis) per message."""
    return round(1000 * sum(v for k, v in cpu.items() if k != "bench") / max(1, messages), 2)


def start_profiler(stack: Stack, out_dir: Path, seconds: float) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        log("py-spy not found: pip install py-spy (no profile recorded)")
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    worker = next(p for p in stack.procs if p.name == "dispatch-worker")
    argv = [spy, "record", "--pid", str(worker.popen.pid), "--subprocesses", "--nonblocking"]
    argv += ["--gil"]  # without it a thread waiting for the GIL counts as busy
    argv += ["--rate", "50", "--duration", str(int(seconds)), "--format", "raw"]
    argv += ["--output", str(out_dir / "dispatch-worker.txt")]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_ours(
    stack: Stack, contacts: int, profile: Path | None, rate: float, *, number_base: int
) -> Run:
    from campaigns.services import admin
    from workers.dispatch import wake_dispatch

    campaign_id = stack.campaign_with_contacts(
        contacts, rate=rate, number_base=number_base, name=f"ours at {rate:g}/s"
    )
    log(f"ours: campaign {campaign_id} with {contacts} contacts at {rate:g}/s")
    stack.sim_post("/_sim/reset")
    cpu_before, busy_before = cpu_snapshot(stack), machine_busy_s()
    spy = start_profiler(stack, profile, contacts / rate * 1.5 + 30) if profile else None
    started = time.time()
    admin.start_campaign(stack.engine, stack.flags(), campaign_id)
    wake_dispatch()  # as the CLI and API do after start
    deadline = started + max(300.0, contacts / 100.0)
    last_log = started
    while stack.campaign_status(campaign_id) == "running":
        now = time.time()
        if now > deadline:
            raise RuntimeError(f"ours: not completed after {now - started:.0f} s")
        if now - last_log >= 5:
            accepted = stack.sim_accepted()
            log(f"ours: {accepted} accepted after {now - started:.0f} s")
            last_log = now
        time.sleep(0.25)
    cpu = cpu_delta(cpu_before, cpu_snapshot(stack))
    busy = machine_busy_s() - busy_before
    if spy is not None:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT (not SIGTERM)
        spy.wait(timeout=60)
    sent, first, last = last_sent_at(stack, campaign_id)
    stats = stack.sim_stats()
    counts = stack.counts(campaign_id)
    seconds = last - started
    per_msg = stack_cpu_ms_per_msg(cpu, sent)
    diagnostics: dict[str, object] = {
        "cpu_s": cpu,
        # Busy core-seconds of processes outside this benchmark's stack (the box is shared).
        "others_cpu_s": round(busy - sum(cpu.values()), 1),
        "worker_cpu_ms_per_msg": round(1000 * cpu.get("dispatch-worker", 0.0) / max(1, sent), 2),
        "stack_cpu_ms_per_msg": per_msg,
        **telemetry(stack, campaign_id),
    }
    log(f"ours: {sent} sent in {seconds:.1f} s, counts {counts}, {diagnostics}")
    if sent != contacts or stats["accepted_total"] != contacts:
        log(f"ours: WARNING sent {sent}, simulator accepted {stats['accepted_total']}")
    return Run(
        campaign_id,
        sent,
        seconds,
        first - started,
        int(stats["accepted_total"]),
        int(stats["duplicate_count"]),
        counts,
        cpu,
        diagnostics,
        per_msg,
        middle_rate(stack.send_starts(campaign_id)),
    )


def run_naive(stack: Stack, contacts: int) -> Run:
    campaign_id = stack.campaign_with_contacts(
        contacts, rate=RATE, number_base=500_000_000, name="naive"
    )
    with stack.engine.connect() as conn:
        ids = [
            int(i)
            for i in conn.execute(
                text("SELECT id FROM contacts WHERE campaign_id = :c ORDER BY id"),
                {"c": campaign_id},
            ).scalars()
        ]
    # Every task is queued before the worker starts (in a naive design the producer is the
    # API request, not the sender), and the rate runs from the first to the last sent_at:
    # neither the enqueueing nor the worker's start-up counts against the naive design.
    import naive_dispatch

    stack.sim_post("/_sim/reset")
    log(f"naive: campaign {campaign_id}, enqueueing {contacts} tasks")
    with naive_dispatch.app.producer_or_acquire() as producer:
        for contact_id in ids:
            naive_dispatch.send_one.apply_async((contact_id,), producer=producer)
    argv = [sys.executable, "-m", "celery", "-A", "naive_dispatch", "worker", "-Q", "naive"]
    argv += ["-c", "2", "-P", "prefork", "--loglevel", "WARNING", "--hostname", "naive@bench"]
    stack.spawn("naive-worker", argv, cwd=BENCH)
    started = time.time()
    # CPU is counted from the first send on (the worker's start-up is not the design's cost).
    while not stack.sim_accepted():
        if time.time() > started + 60:
            raise RuntimeError("naive: no send within 60 s")
        time.sleep(0.02)
    cpu_before, busy_before, sent_before = (
        cpu_snapshot(stack),
        machine_busy_s(),
        stack.sim_accepted(),
    )
    deadline = started + max(600.0, contacts / 5.0)
    last_log = started
    while True:
        counts = stack.counts(campaign_id)
        if counts.get("initial", 0) == 0:
            break
        now = time.time()
        if now > deadline:
            raise RuntimeError(f"naive: not done after {now - started:.0f} s: {counts}")
        if now - last_log >= 5:
            log(f"naive: {counts} after {now - started:.0f} s")
            last_log = now
        time.sleep(0.5)
    cpu = cpu_delta(cpu_before, cpu_snapshot(stack))
    busy = machine_busy_s() - busy_before
    sent, first, last = last_sent_at(stack, campaign_id)
    stats = stack.sim_stats()
    seconds = (last - first) * sent / max(1, sent - 1)  # n sends span n - 1 intervals
    per_msg = stack_cpu_ms_per_msg(cpu, sent - sent_before)
    diagnostics: dict[str, object] = {
        "naive_others_cpu_s": round(busy - sum(cpu.values()), 1),
        "naive_stack_cpu_ms_per_msg": per_msg,
    }
    log(f"naive: {sent} sent in {seconds:.1f} s, counts {counts}, {diagnostics}")
    return Run(
        campaign_id,
        sent,
        seconds,
        first - started,
        int(stats["accepted_total"]),
        int(stats["duplicate_count"]),
        counts,
        cpu,
        diagnostics,
        per_msg,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument(
        "--naive-contacts",
        type=int,
        default=10_000,
        help="the naive design sends min(contacts, this) contacts (it is slow)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=RATE,
        help="the at-cap run's rate (1,000, the most a campaign may be given; a higher value"
        " is written to its row directly)",
    )
    parser.add_argument(
        "--capacity-rate",
        type=float,
        default=CAPACITY_RATE,
        help="the capacity run's cap, written to the campaign's row so it never binds (0: skip)",
    )
    parser.add_argument("--profile", type=Path, help="py-spy output dir for our worker")
    parser.add_argument("--keep", action="store_true", help="keep the data dir (logs)")
    args = parser.parse_args()
    load = machine_load()
    naive_contacts = min(args.contacts, args.naive_contacts)
    # The capacity run's campaign asks for more than a sender number carries on the platform;
    # the sender's own bucket (SENDER_MAX_RATE_PER_S) must not bind there either.
    os.environ.setdefault("SENDER_MAX_RATE_PER_S", str(max(args.capacity_rate, args.rate) * 2))
    with Stack("dispatch", keep=args.keep) as stack:
        stack.start_simulator()
        stack.start_dispatch_worker(concurrency=2, beat=True)
        at_cap = run_ours(stack, args.contacts, args.profile, args.rate, number_base=0)
        capacity = (
            run_ours(stack, args.contacts, None, args.capacity_rate, number_base=200_000_000)
            if args.capacity_rate > 0
            else None
        )
        stack.stop("dispatch-worker")
        naive = run_naive(stack, naive_contacts)
    headline = capacity or at_cap
    capacity_figures: dict[str, object] = (
        {
            "capacity_rate_cap": args.capacity_rate,
            "capacity_seconds": round(capacity.seconds, 1),
            "capacity_steady_msgs_per_s": round(capacity.steady_msgs_per_s, 1),
            "capacity_first_send_s": round(capacity.first_send_s, 2),
            "capacity_sent": capacity.sent,
            "capacity_stack_cpu_ms_per_msg": capacity.stack_cpu_ms_per_msg,
            "capacity_cpu_s": capacity.cpu_s,
            "capacity_others_cpu_s": capacity.diagnostics["others_cpu_s"],
            "capacity_per_second_p10_p50_p90": capacity.diagnostics.get("per_second_p10_p50_p90"),
        }
        if capacity
        else {}
    )
    print(
        json.dumps(
            {
                "contacts": args.contacts,
                "msgs_per_s": round(headline.msgs_per_s, 1),
                "at_cap_msgs_per_s": round(at_cap.msgs_per_s, 1),
                "rate_cap": args.rate,
                "at_cap_pct": round(100 * at_cap.msgs_per_s / args.rate, 2),
                "at_cap_steady_msgs_per_s": round(at_cap.steady_msgs_per_s, 1),
                "naive_contacts": naive_contacts,
                "naive_msgs_per_s": round(naive.msgs_per_s, 1),
                "ratio": round(headline.msgs_per_s / naive.msgs_per_s, 2),
                "at_cap_ratio": round(at_cap.msgs_per_s / naive.msgs_per_s, 2),
                # Load-independent: the stack's CPU per message, naive over ours.
                "cpu_ratio": round(naive.stack_cpu_ms_per_msg / at_cap.stack_cpu_ms_per_msg, 2),
                "duplicates": at_cap.duplicates + (capacity.duplicates if capacity else 0),
                "seconds": round(at_cap.seconds, 1),
                "first_send_s": round(at_cap.first_send_s, 2),
                "sent": at_cap.sent + (capacity.sent if capacity else 0),
                "simulator_accepted": at_cap.accepted + (capacity.accepted if capacity else 0),
                **capacity_figures,
                "naive_seconds": round(naive.seconds, 1),
                "naive_duplicates": naive.duplicates,
                **at_cap.diagnostics,
                **naive.diagnostics,
                "load_1m_at_start": load,
            }
        )
    )


if __name__ == "__main__":
    main()
