"""A bench run: :func:`run_bench` runs one scenario on the hub (a subprocess it starts, or a running hub)
and on the peer (:func:`run_nats`: NATS JetStream, a stream made for the run), ``--repeat`` rounds, and
keeps each row's median round. The workloads themselves are :mod:`outboxhub.bench.hub_scenarios` and
:mod:`outboxhub.bench.peer_nats`.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console

from outboxhub.bench.cases import scenario_sizes
from outboxhub.bench.hub_scenarios import HUB_SCENARIOS, PREFILLED, HubContext, prefill_store, prefill_ws
from outboxhub.bench.hubproc import hub_target
from outboxhub.bench.options import BenchOptions, Scenario
from outboxhub.bench.procstats import find_listener
from outboxhub.bench.report import Tracker
from outboxhub.bench.results import BenchReport, Measurement, started_now
from outboxhub.bench.wsclient import new_session
from outboxhub.ids import new_id
from outboxhub.store.base import mask_url

__all__ = ["run_bench", "run_nats"]


# -- a run -------------------------------------------------------------------------------------------------


async def _run_hub(
    scenario: Scenario, options: BenchOptions, tracker: Tracker, run_id: str, workdir: Path
) -> tuple[str, list[Measurement]]:
    store_url = None if options.url else options.store or f"sqlite:///{workdir / 'bench.db'}"
    topic = f"bench.{run_id}.{scenario}"
    n, size = options.events_for(scenario), scenario_sizes(options, scenario)
    if store_url is not None and scenario in PREFILLED:
        await prefill_store(store_url, topic, n, size, tracker)
    async with new_session() as session, hub_target(options, store=store_url, workdir=workdir) as target:
        ctx = HubContext(
            options=options, target=target, tracker=tracker, session=session, run_id=run_id, workdir=workdir
        )
        if store_url is None and scenario in PREFILLED:
            await prefill_ws(ctx, topic, n, size)
        label = f"{target.store_label} ({mask_url(store_url)})" if store_url else f"hub at {target.ws_url}"
        return label, await HUB_SCENARIOS[scenario](ctx)


def _medians(rounds: list[list[Measurement]]) -> list[Measurement]:
    """Per case, the measurement of the median round (by headline value); the first round's order."""
    if not rounds:
        return []
    out: list[Measurement] = []
    for i, first in enumerate(rounds[0]):
        same = sorted((r[i] for r in rounds if i < len(r) and r[i].case == first.case), key=lambda m: m.value)
        out.append(same[(len(same) - 1) // 2] if same else first)
    return out


def _interleave(hub: list[Measurement], peer: list[Measurement]) -> list[Measurement]:
    """Each hub row followed by the peer's row of the same case."""
    by_case = {(m.scenario, m.case): m for m in peer}
    out: list[Measurement] = []
    for m in hub:
        out.append(m)
        match = by_case.pop((m.scenario, m.case), None)
        if match is not None:
            out.append(match)
    return out + list(by_case.values())


async def run_bench(
    scenario: Scenario, options: BenchOptions, *, console: Console | None = None
) -> BenchReport:
    """Run ``scenario`` on the hub (and on the peer when ``options.peer`` is set); progress bars go to
    ``console`` (none when None). The hub runs first, then the peer, each alone on the machine.
    ``ValueError`` when ``options`` holds one the scenario cannot use (see ``check_scenario``)."""
    options.check_scenario(scenario)
    run_id = new_id().replace("-", "")[-10:]
    started = started_now()
    hub: list[list[Measurement]] = []
    peer: list[list[Measurement]] = []
    with Tracker(console) as tracker:
        for round_no in range(options.repeat):
            if options.repeat > 1:
                tracker.note(f"round {round_no + 1} of {options.repeat}")
            round_id = f"{run_id}r{round_no}"
            with tempfile.TemporaryDirectory(prefix="outboxhub-bench-") as tmp:
                workdir = Path(tmp)
                label, measured = await _run_hub(scenario, options, tracker, round_id, workdir)
                hub.append(measured)
                if options.peer == "nats":
                    peer.append(
                        await run_nats(scenario, options, tracker=tracker, run_id=round_id, workdir=workdir)
                    )
    report = BenchReport.of_run(
        scenario,
        store=label,
        options=options,
        started_at=started,
        measurements=_interleave(_medians(hub), _medians(peer)),
    )
    if options.repeat > 1:
        report.notes.append(f"each row is the median of {options.repeat} rounds (by its headline value)")
    if options.url is None:
        report.notes.append(
            "the hub ran as a subprocess (outboxhub serve, uvloop); clients ran in this process"
        )
    return report


# -- the peer ---------------------------------------------------------------------------------------------


async def run_nats(
    scenario: Scenario, options: BenchOptions, *, tracker: Tracker, run_id: str, workdir: Path
) -> list[Measurement]:
    """Run ``scenario`` against JetStream at ``options.nats_url`` on a stream made for it (then deleted)."""
    import nats  # the 'bench' extra, as is everything of the peer
    from nats.js.api import StorageType, StreamConfig

    from outboxhub.bench.peer_nats import NATS_SCENARIOS, NatsContext

    url = options.nats_url
    parts = urlsplit(url)
    pid = find_listener(parts.port or 4222) if parts.hostname in ("127.0.0.1", "localhost", "::1") else None
    ctx = NatsContext(
        options=options,
        tracker=tracker,
        url=url,
        pid=pid,
        stream=f"OBXBENCH_{run_id}_{scenario}".upper(),
        subject=f"obxbench.{run_id}.{scenario}",
        workdir=workdir,
    )
    try:
        admin = await nats.connect(url, allow_reconnect=False, max_reconnect_attempts=0)
    except Exception as exc:
        raise RuntimeError(f"cannot connect to NATS at {url}: {exc!r} (is nats-server -js running?)") from exc
    try:
        jsm = admin.jetstream()
        await jsm.add_stream(
            StreamConfig(
                name=ctx.stream,
                subjects=[ctx.subject],
                storage=StorageType.FILE,
                num_replicas=options.nats_replicas,
            )
        )
        try:
            return await NATS_SCENARIOS[scenario](ctx)
        finally:
            for nc in ctx.connections:
                with contextlib.suppress(Exception):
                    await nc.close()
            with contextlib.suppress(Exception):
                await jsm.delete_stream(ctx.stream)
    finally:
        await admin.close()
