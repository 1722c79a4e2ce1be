"""``outboxhub bench``: the benchmark harness, with NATS JetStream as the side-by-side peer.

Modules, each one concept:

* :mod:`~outboxhub.bench.runner` — a run: one scenario on the hub (a subprocess it starts, or ``--url``)
  and on the peer, ``--repeat`` rounds, each row's median round;
* :mod:`~outboxhub.bench.hub_scenarios` — the scenarios against the hub, over WebSocket;
* :mod:`~outboxhub.bench.peer_nats` — the same workloads against JetStream through nats-py;
* :mod:`~outboxhub.bench.measure` — what both sides share: the server watch, time bounds, the outbox
  drain and the row each kind of scenario reports;
* :mod:`~outboxhub.bench.stats` — HDR latency histograms; :mod:`~outboxhub.bench.procstats` — server CPU
  and RSS (psutil); :mod:`~outboxhub.bench.report` — the rich table, progress bars and JSON;
* :mod:`~outboxhub.bench.cli` — ``register(app)`` adds the ``bench`` command group to the CLI.

Nothing heavy is imported here: the CLI stays usable without the ``bench`` extra (hdrhistogram, psutil,
nats-py), and says what to install when a bench command needs it.
"""

from __future__ import annotations

__all__: list[str] = []
