"""The burst scenario shared by the single-server and the topology tests.

`start_burst` runs N flow processes, each with M tasks, released together from a barrier so
that the server emits thousands of events within seconds (the live websocket drops most of
them). `watch_until_exact` then compares the exporter with the server's own truth once a
second until they agree, recording when the server itself settled (its event persister and
task-run recorder lag the burst), so a failure still reports when, if ever, the exporter
became exact. `check_exact_in_time` turns that into the test's verdict.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

from support import FLOW_RUN_PREFIX, TASK_RUN_PREFIX, diff, exporter_view, log, require, truth_view, wait_for

FLOWS = ["flow_runs"]
BOTH = ["flow_runs", "task_runs"]


@dataclass
class Burst:
    flows: int
    tasks: int
    run_ids: list[str]
    t_go: float
    t_last: float

    def since_last(self, t: Optional[float]) -> str:
        return f"{t - self.t_last:.1f}" if t is not None else "never"


@dataclass
class Watch:
    """When the server's stored events and REST task runs were complete, when the exporter
    agreed with them, and what differed at the last comparison."""
    t_events: Optional[float] = None
    t_rest: Optional[float] = None
    t_exact: Optional[float] = None
    last: list[str] = field(default_factory=lambda: ["(never compared)"])

    @property
    def t_truth(self) -> Optional[float]:
        return max(self.t_events, self.t_rest) if self.t_events and self.t_rest else None


def start_burst(workloads: Callable, api, tmp_path: Path, flows: int, tasks: int,
                during: Optional[Callable[[Callable[[], bool]], None]] = None) -> Burst:
    """Runs `flows` burst flow processes of `tasks` tasks each against `api`: every process
    imports Prefect and creates its flow run, then waits at a barrier; one file releases
    them together. `during`, if given, is called once they are released, with a function
    that tells whether any is still running (to act mid-burst). Returns once all have exited
    successfully."""
    go = tmp_path / "go"
    procs = [
        workloads(api, "burst", "--tasks", str(tasks), "--ready-file", str(tmp_path / f"ready{i}"),
                  "--go-file", str(go), name=f"burst{i}")
        for i in range(flows)
    ]

    def all_ready():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"burst process {p.name} exited early\n{p.output()}", pytrace=False)
        return all((tmp_path / f"ready{i}").exists() for i in range(flows))

    wait_for(all_ready, 180, "burst processes at the barrier", 0.1)
    go.touch()
    t_go = time.monotonic()
    deadline = t_go + 240
    if during is not None:
        during(lambda: any(p.poll() is None for p in procs) and time.monotonic() < deadline)
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline:
            pytest.fail("burst flows still running after 240 s", pytrace=False)
        time.sleep(0.05)
    t_last = max(p.finished for p in procs)
    for p in procs:
        assert p.proc.returncode == 0, f"{p.name} exited {p.proc.returncode}\n{p.output()}"
    run_ids = [m.group(1) for p in procs for m in re.finditer(r"WORKLOAD burst-run (\S+)", p.stdout())]
    require(len(run_ids) == flows, f"{flows} burst flow run ids, got {run_ids}")
    log(f"burst: {flows} x {tasks} tasks ran in {t_last - t_go:.1f} s")
    return Burst(flows, tasks, run_ids, t_go, t_last)


def watch_until_exact(exporter, server, burst: Burst, expected_flow_events: dict,
                      expected_task_events: dict, observe_cap: float) -> Watch:
    """Compares the exporter's flow runs (totals and entries) and task runs (entries, and
    totals once REST has every burst task run) with `server` once a second. Stops when they
    agree and the server did not move during the comparison, or `observe_cap` seconds after
    the server's truth settled, or 300 s after the last flow finished."""
    watch = Watch()

    def events_settled() -> bool:
        return (server.rest.state_event_counts(FLOW_RUN_PREFIX) == expected_flow_events
                and server.rest.state_event_counts(TASK_RUN_PREFIX) == expected_task_events)

    def rest_settled() -> bool:
        done = server.rest.count("task_runs", ["COMPLETED"], flow_runs={"id": {"any_": burst.run_ids}})
        return done == burst.flows * burst.tasks

    def server_side(with_task_totals: bool):
        side = [truth_view(server, FLOWS, entries=True), server.rest.state_event_counts(TASK_RUN_PREFIX)]
        if with_task_totals:  # paging every task run is heavy: only once REST has them all
            side.append(server.rest.truth("task_runs"))
        return side

    for _ in range(1000):
        if watch.t_events is None and events_settled():
            watch.t_events = time.monotonic()
        if watch.t_rest is None and rest_settled():
            watch.t_rest = time.monotonic()
        got = exporter_view(exporter.counts(), BOTH, entries=True)
        got_tasks = got.get("task_runs") or {}
        side = server_side(watch.t_rest is not None)
        last = [f"flow_runs.{d}" for d in diff(got["flow_runs"], side[0]["flow_runs"])]
        last += [f"task_runs.entries_by_state_name.{d}" for d in diff(got_tasks.get("entries_by_state_name"), side[1])]
        if watch.t_rest is None:
            last.append("REST does not have every burst task run completed yet")
        else:
            totals = {k: v for k, v in got_tasks.items() if k != "entries_by_state_name"}
            last += [f"task_runs.{d}" for d in diff(totals, side[2])]
        if watch.t_events is None:
            last.append("the server has not stored every burst state event yet")
        watch.last = last
        if not last and watch.t_truth is not None:
            if server_side(True) == side:  # the server did not move meanwhile
                watch.t_exact = time.monotonic()
                break
            watch.last = ["server truth changed during the comparison"]
        # Keep watching past the deadline (asserted by the caller) so that a failure still
        # reports when, if ever, the exporter became exact.
        now = time.monotonic()
        if now > burst.t_last + 300 or (watch.t_truth is not None and now > watch.t_truth + observe_cap):
            break
        time.sleep(1.0)
    return watch


def check_exact_in_time(watch: Watch, burst: Burst, server, expected_flow_events: dict,
                        expected_task_events: dict, observe_cap: float, limit: float | None) -> None:
    """Fails the test unless the server settled and the exporter became exact while watched
    and, when `limit` is given, within `limit` seconds of the last flow finishing, or of the
    server's truth settling if that came later (the exporter cannot be ahead of what the server
    has stored)."""
    require(watch.t_events is not None, "the server never stored all burst state events: "
            f"{server.rest.state_event_counts(FLOW_RUN_PREFIX)} {server.rest.state_event_counts(TASK_RUN_PREFIX)} "
            f"expected {expected_flow_events} {expected_task_events}")
    require(watch.t_rest is not None,
            f"Prefect's REST never showed all {burst.flows * burst.tasks} task runs completed")
    assert watch.t_exact is not None, (
        f"exporter not exact {observe_cap} s after the server's truth settled "
        f"({burst.since_last(watch.t_truth)} s after the last flow finished):\n  " + "\n  ".join(watch.last[:60])
    )
    if limit is None:
        return
    late_by = watch.t_exact - max(burst.t_last, watch.t_truth)
    assert late_by <= limit, (
        f"exact only {late_by:.1f} s after the last flow finished / the truth settled (limit {limit} s)"
    )
