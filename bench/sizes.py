"""How big each scenario runs: the full run, and the smoke run the tests use."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """Every count a run uses; all loops of the suite are bounded by these."""

    fanout_sessions: tuple[int, ...] = (100, 1000)
    sockets_per_session: int = 2
    fanout_deliveries: int = 20_000
    """Messages delivered per repetition; the rounds M follow from it."""
    fanout_reps: int = 7
    close_sockets: tuple[int, ...] = (1, 10, 100)
    close_reps: int = 40
    idle_connections: int = 2000
    idle_reps: int = 3
    churn_cycles: int = 10_000
    churn_blocks: int = 10
    """The cycles are timed in this many blocks, for a median and a p99."""
    churn_workers: int = 20
    churn_warmup: int = 200
    churn_logout_every: int = 10
    """Every so many cycles the server closes the socket (a logout)."""
    churn_settle_timeout: float = 60.0
    """How long the state may take to return to empty after the last cycle."""
    open_concurrency: int = 100
    push_session_sockets: tuple[int, ...] = (100,)
    """K: the protocol connections of the one session that pushes reach."""
    push_latency_reps: int = 100


FULL = Sizes()
SMOKE = Sizes(
    fanout_sessions=(3,),
    fanout_deliveries=60,
    fanout_reps=2,
    close_sockets=(1, 3),
    close_reps=3,
    idle_connections=20,
    idle_reps=1,
    churn_cycles=40,
    churn_blocks=2,
    churn_workers=4,
    churn_warmup=4,
    churn_settle_timeout=3.0,
    push_session_sockets=(3,),
    push_latency_reps=3,
)
