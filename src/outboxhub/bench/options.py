"""What a bench run is asked to do: :class:`BenchOptions`, built by the CLI (or a test) and checked here."""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

__all__ = ["CLIENT_SCENARIOS", "DEFAULT_E2E_RATES", "SCENARIOS", "BenchOptions", "Scenario"]

Scenario: TypeAlias = Literal["publish", "consume", "e2e", "fanout", "outbox", "idle", "replay"]
SCENARIOS: Final[tuple[Scenario, ...]] = ("publish", "consume", "e2e", "fanout", "outbox", "idle", "replay")
DEFAULT_E2E_RATES: Final = (1_000.0, 5_000.0)
CLIENT_SCENARIOS: Final[tuple[Scenario, ...]] = ("publish", "consume", "e2e", "idle")
"""The scenarios ``--clients`` applies to (the others refuse it rather than ignore it)."""


class BenchOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Every knob of a run. ``None`` means "the scenario's default" (see :meth:`clients_for` and the CLI).

    * ``store`` — the hub's store URL; None: an SQLite file in a temporary directory.
    * ``url``/``token``/``ops_url`` — benchmark a running hub instead of starting one.
    * ``clients`` — connections: publish (pipelined case), consume (members of the one group), e2e
      (publishers sharing the rate), idle; the other scenarios refuse it (:meth:`check_scenario`).
    * ``sizes`` — payload sizes in bytes (publish: 100 and 4096 by default; others: 100).
    * ``duration_s``/``warmup_s`` — per measured case (publish, e2e) and its warm-up.
    * ``events`` — how many events a count-based case moves (consume, fanout, outbox, replay).
    * ``window`` — publishes in flight per pipelined connection.
    * ``rates`` — e2e publish rates (events/s).
    * ``peer`` — ``"nats"`` runs the same workload against JetStream at ``nats_url``.
    * ``sdk`` — publish also through the Python SDK (``HubClient``), as an extra row.
    * ``ws_server`` — the started hub's ``ws_server`` setting (None: the hub's default).
    * ``repeat`` — rounds (hub then peer, each round); the report keeps each row's median round.
    """

    store: str | None = None
    url: str | None = None
    token: str | None = None
    ops_url: str | None = None
    clients: int | None = None
    sizes: tuple[int, ...] = ()
    duration_s: float = 5.0
    warmup_s: float = 1.0
    events: int | None = None
    window: int = 256
    rates: tuple[float, ...] = DEFAULT_E2E_RATES
    groups: int = 10
    peer: Literal["nats"] | None = None
    nats_url: str = "nats://127.0.0.1:4222"
    nats_replicas: int = 1
    ws_server: Literal["aiohttp", "picows"] | None = None
    sdk: bool = False
    repeat: int = 1

    def __post_init__(self) -> None:
        if self.url is not None and not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"--url must be a ws:// or wss:// URL, got {self.url!r}")
        if self.url is not None and not self.token:
            raise ValueError("--url needs --token (a JWT with publish:** and subscribe:** scopes)")
        if self.url is not None and self.store is not None:
            raise ValueError("give --store (start a hub) or --url (use a running hub), not both")
        if self.clients is not None and self.clients < 1:
            raise ValueError(f"--clients must be >= 1, got {self.clients}")
        for size in self.sizes:
            if not 16 <= size <= 1_000_000:
                raise ValueError(f"--size must be between 16 and 1000000 bytes, got {size}")
        if not self.duration_s > 0:
            raise ValueError(f"--duration must be > 0 seconds, got {self.duration_s}")
        if self.warmup_s < 0:
            raise ValueError(f"--warmup must be >= 0 seconds, got {self.warmup_s}")
        if self.events is not None and self.events < 1:
            raise ValueError(f"--events must be >= 1, got {self.events}")
        if self.window < 1:
            raise ValueError(f"--window must be >= 1, got {self.window}")
        for rate in self.rates:
            if not rate > 0:
                raise ValueError(f"--rate must be > 0 events/s, got {rate}")
        if not self.rates:
            raise ValueError("--rate: at least one rate is needed")
        if not 1 <= self.repeat <= 20:
            raise ValueError(f"--repeat must be between 1 and 20, got {self.repeat}")
        if self.groups < 1:
            raise ValueError(f"--groups must be >= 1, got {self.groups}")

    def check_scenario(self, scenario: Scenario) -> None:
        """Refuse options ``scenario`` cannot use (``ValueError`` naming the scenarios that take them)."""
        if self.clients is not None and scenario not in CLIENT_SCENARIOS:
            raise ValueError(
                f"--clients does not apply to {scenario}; it is taken by {', '.join(CLIENT_SCENARIOS[:-1])} "
                f"and {CLIENT_SCENARIOS[-1]}"
            )

    def clients_for(self, scenario: Scenario) -> int:
        """Connections for a scenario: ``--clients`` or its default (publish 4, idle 1000, consume and
        e2e 1)."""
        if self.clients is not None:
            return self.clients
        return {"publish": 4, "idle": 1000}.get(scenario, 1)

    def events_for(self, scenario: Scenario) -> int:
        """Events for a count-based scenario: ``--events`` or its default."""
        if self.events is not None:
            return self.events
        return {"replay": 1_000_000, "fanout": 20_000}.get(scenario, 50_000)

    def sizes_for(self, scenario: Scenario) -> tuple[int, ...]:
        """Payload sizes: ``--size`` or the scenario's default (publish: 100 B and 4 KiB)."""
        if self.sizes:
            return self.sizes
        return (100, 4096) if scenario == "publish" else (100,)
