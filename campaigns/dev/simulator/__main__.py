"""``python -m campaigns.dev.simulator --port 8900 --webhook-url URL --app-secret S``."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from typing import Any

from campaigns.dev.simulator.config import SimulatorConfig, apply_updates
from campaigns.dev.simulator.runner import serve


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m campaigns.dev.simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--webhook-url", default=None)
    p.add_argument("--app-secret", default=None)
    p.add_argument("--token", default=None, help="bearer token to accept")
    p.add_argument("--rate", type=float, default=None, help="messages/s per phone number id")
    p.add_argument("--pair-interval", type=float, default=None)
    p.add_argument("--demo", action="store_true", help="a few percent of every failure path")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a runtime setting, e.g. --set undeliverable_share=0.05 "
        "--set 'explicit={\"4915100000001\": 131050}'",
    )
    args = p.parse_args(argv)

    config = SimulatorConfig.demo() if args.demo else SimulatorConfig()
    changes: dict[str, Any] = {"host": args.host, "port": args.port, "seed": args.seed}
    if args.webhook_url:
        changes["webhook_url"] = args.webhook_url
    if args.app_secret:
        changes["app_secret"] = args.app_secret
    if args.token:
        changes["access_token"] = args.token
    if args.rate is not None:
        changes["rate_per_second"] = args.rate
    if args.pair_interval is not None:
        changes["pair_interval_s"] = args.pair_interval
    config = replace(config, **changes)
    updates: dict[str, Any] = {}
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep:
            p.error(f"--set needs KEY=VALUE, got {item!r}")
        try:
            updates[key] = json.loads(raw)
        except json.JSONDecodeError:
            updates[key] = raw
    try:
        config = apply_updates(config, updates)
    except ValueError as exc:
        p.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(config)


if __name__ == "__main__":
    main()
