"""Configuration of the Cloud API simulator (one dataclass, no I/O)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from campaigns.dev.simulator.outcomes import OutcomeKind, OutcomeRules

__all__ = ["RUNTIME_FIELDS", "SimulatorConfig", "apply_updates"]


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything the simulator does differently per run.

    Limits: ``rate_per_second`` is a token bucket per phone number id (burst = rate; 0 or
    None = unlimited) answering 130429 over it; ``pair_interval_s`` refuses a second
    *accepted* message to the same recipient within that many seconds with 131056 (0 = off).
    Outcomes per recipient: see :mod:`campaigns.dev.simulator.outcomes`.
    Webhooks (``webhook_url`` None = none are posted): each status is posted after a random
    delay in [``webhook_delay_min_s``, ``webhook_delay_max_s``]; ``duplicate_share`` of the
    statuses are posted a second time (after another random delay); with ``reorder`` the
    statuses of one message are posted in random order (their timestamps stay logical),
    without it they are posted in order, one POST at a time (a retried batch or a duplicate
    may still come late); statuses due within one tick
    (``webhook_tick_s``) are batched per phone number id, up to ``webhook_batch_size`` per
    POST; a POST answered non-2xx or failing is retried with exponential backoff
    (``webhook_retry_base_s`` doubling up to ``webhook_retry_max_s``) up to
    ``webhook_max_tries`` times, then counted in ``webhooks_given_up``.
    """

    host: str = "127.0.0.1"
    port: int = 8900
    api_version: str = "v21.0"  # advertised only: any version in the path is accepted
    access_token: str = "sim-token"  # noqa: S105 - a fixed token of the local stand-in
    rate_per_second: float | None = None
    pair_interval_s: float = 6.0

    webhook_url: str | None = None
    app_secret: str = "sim-app-secret"  # noqa: S105 - signs the simulator's own webhooks
    webhook_delay_min_s: float = 0.05
    webhook_delay_max_s: float = 0.5
    duplicate_share: float = 0.1
    reorder: bool = True
    webhook_batch_size: int = 50
    webhook_tick_s: float = 0.02
    webhook_concurrency: int = 8
    webhook_max_tries: int = 10
    webhook_retry_base_s: float = 0.2
    webhook_retry_max_s: float = 10.0
    webhook_timeout_s: float = 10.0

    timeout_hang_s: float = 30.0
    # POST /v1/contacts: "classic" (valid / invalid, processing under no_wait) or
    # "repurposed" (valid with a wa_id for every number, seed 004).
    contacts_mode: str = "classic"
    missing_templates: frozenset[str] = frozenset()
    template_param_counts: Mapping[str, int] = field(default_factory=dict)
    outcomes: OutcomeRules = field(default_factory=OutcomeRules)

    waba_id: str = "100000000000001"
    display_phone_number: str = "15550001111"
    seed: int | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.webhook_delay_min_s <= self.webhook_delay_max_s:
            raise ValueError("need 0 <= webhook_delay_min_s <= webhook_delay_max_s")
        if not 0.0 <= self.duplicate_share <= 1.0:
            raise ValueError("duplicate_share must be within [0, 1]")
        if self.rate_per_second is not None and self.rate_per_second < 0:
            raise ValueError("rate_per_second must be >= 0")
        if self.pair_interval_s < 0 or self.timeout_hang_s < 0:
            raise ValueError("intervals must be >= 0")
        if self.webhook_batch_size < 1 or self.webhook_concurrency < 1:
            raise ValueError("webhook_batch_size and webhook_concurrency must be >= 1")
        if self.webhook_max_tries < 1 or self.webhook_tick_s <= 0:
            raise ValueError("webhook_max_tries must be >= 1 and webhook_tick_s > 0")
        if self.contacts_mode not in ("classic", "repurposed"):
            raise ValueError("contacts_mode must be 'classic' or 'repurposed'")
        if not isinstance(self.missing_templates, frozenset):
            object.__setattr__(self, "missing_templates", frozenset(self.missing_templates))

    @classmethod
    def demo(cls, **overrides: Any) -> SimulatorConfig:
        """80 msg/s per number, a few percent of every failure path, real-ish delays."""
        base = cls(
            rate_per_second=80.0,
            outcomes=OutcomeRules.demo(),
            webhook_delay_min_s=0.2,
            webhook_delay_max_s=3.0,
        )
        return replace(base, **overrides)

    def summary(self) -> dict[str, Any]:
        """JSON-able view without secrets (for ``GET /_sim/config``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("access_token", "app_secret"):
                continue
            value = getattr(self, f.name)
            if f.name == "missing_templates":
                value = sorted(value)
            elif f.name == "template_param_counts":
                value = dict(value)
            elif f.name == "outcomes":
                value = {
                    g.name: (
                        {
                            k: str(v) if isinstance(v, OutcomeKind) else v
                            for k, v in getattr(value, g.name).items()
                        }
                        if g.name in ("explicit", "wa_id_overrides", "user_ids")
                        else getattr(value, g.name)
                    )
                    for g in dataclasses.fields(value)
                    if not g.name.startswith("_")
                }
            out[f.name] = value
        return out


#: Fields ``POST /_sim/config`` may change at run time (outcome fields go to ``outcomes``).
RUNTIME_FIELDS = frozenset(
    {
        "rate_per_second",
        "pair_interval_s",
        "webhook_delay_min_s",
        "webhook_delay_max_s",
        "duplicate_share",
        "reorder",
        "webhook_batch_size",
        "webhook_max_tries",
        "timeout_hang_s",
        "missing_templates",
        "template_param_counts",
        "contacts_mode",
    }
)
_OUTCOME_FIELDS = frozenset(
    {
        "undeliverable_share",
        "delivery_fail_share",
        "server_error_share",
        "timeout_share",
        "accepted_error_share",
        "undeliverable_later_share",
        "read_share",
        "read_without_delivered_share",
        "explicit",
        "server_error_attempts",
        "timeout_attempts",
        "server_error_code",
        "undeliverable_code",
        "delivery_fail_code",
        "undeliverable_later_code",
        "wa_id_overrides",
        "user_ids",
        "mimic_wa_id_quirks",
    }
)


def _parse_explicit(raw: Mapping[str, Any]) -> dict[str, OutcomeKind | int]:
    out: dict[str, OutcomeKind | int] = {}
    for digits, value in raw.items():
        if isinstance(value, bool):
            raise ValueError(f"explicit[{digits!r}]: not an outcome")
        if isinstance(value, int):
            out[str(digits)] = value
        elif isinstance(value, str) and value.isdigit():
            out[str(digits)] = int(value)
        else:
            out[str(digits)] = OutcomeKind(value)
    return out


def apply_updates(config: SimulatorConfig, updates: Mapping[str, Any]) -> SimulatorConfig:
    """A new config with ``updates`` applied (top-level runtime fields or outcome fields).

    Raises ``ValueError`` for unknown keys or invalid values; the old config stays valid.
    """
    top: dict[str, Any] = {}
    rules: dict[str, Any] = {}
    for key, value in updates.items():
        if key in RUNTIME_FIELDS:
            if key == "missing_templates":
                value = frozenset(value)
            elif key == "template_param_counts":
                value = {str(k): int(v) for k, v in dict(value).items()}
            top[key] = value
        elif key in _OUTCOME_FIELDS:
            if key == "explicit":
                value = _parse_explicit(value)
            elif key in ("wa_id_overrides", "user_ids"):
                value = {str(k): str(v) for k, v in dict(value).items()}
            rules[key] = value
        else:
            raise ValueError(f"unknown or read-only setting: {key}")
    if rules:
        top["outcomes"] = replace(config.outcomes, **rules)
    try:
        return replace(config, **top)
    except TypeError as exc:  # pragma: no cover - guarded by the key sets above
        raise ValueError(str(exc)) from exc
