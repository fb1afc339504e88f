"""A local stand-in for the WhatsApp Cloud API (sends, platform errors, signed webhooks).

Public API::

    SimulatorConfig(...)                   # config.py: every knob, SimulatorConfig.demo()
    build_app(config) -> web.Application   # server.py
    await run_simulator(config)            # runner.py: serve until cancelled
    serve(config)                          # runner.py: blocking (CLI)
    RunningSimulator(config)               # runner.py: background thread (tests, e2e)
    OutcomeRules, outcome_for(...)         # outcomes.py: which number gets which answer
"""

from campaigns.dev.simulator.config import SimulatorConfig, apply_updates
from campaigns.dev.simulator.outcomes import (
    ERROR_CATALOGUE,
    Outcome,
    OutcomeKind,
    OutcomeRules,
    error_info,
    outcome_for,
    reads,
    wa_id_for,
)
from campaigns.dev.simulator.runner import RunningSimulator, run_simulator, serve, start_site
from campaigns.dev.simulator.server import STATE_KEY, SimulatorState, build_app

__all__ = [
    "ERROR_CATALOGUE",
    "STATE_KEY",
    "Outcome",
    "OutcomeKind",
    "OutcomeRules",
    "RunningSimulator",
    "SimulatorConfig",
    "SimulatorState",
    "apply_updates",
    "build_app",
    "error_info",
    "outcome_for",
    "reads",
    "run_simulator",
    "serve",
    "start_site",
    "wa_id_for",
]
