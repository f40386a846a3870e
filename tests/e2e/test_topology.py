"""End-to-end on Prefect's production topology: PostgreSQL, Redis messaging (prefect-redis),
two API replicas (`prefect server start --no-services`) and one `prefect server services
start` (topology.py).

The exporter subscribes to replica 1's websocket; flows run against replica 2, so every event
the exporter sees crossed Redis from the other replica. Truth is replica 1's REST
(`/flow_runs/filter`, `/task_runs/filter`, all pages, cross-checked with `/count`) and the
events the services process stored (`/events/count-by/event`), never the exporter's output.

A second exporter reads the same events from Redis instead (`--redis-url`, its own consumer
group on the `events` stream, a state file): it must be exact against the same truth, and it
is killed with SIGKILL mid-burst and restarted from its state file without losing or double
counting anything (its unacknowledged entries are claimed again and deduplicated). A third,
in the second's consumer group, is refused with an error naming `--redis-group`.

One cluster and these two exporters for the module: both start on the fresh cluster, so their
entries compare with every stored state event through both tests.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from burst import check_exact_in_time, start_burst, watch_until_exact
from support import (
    TASK_RUN_PREFIX,
    Exporter,
    artifacts,
    exporter_bin,
    exporter_context,
    exporter_view,
    log,
    require,
    summary,
    truth_view,
    wait_quiescent,
    wait_until_equal,
)
from topology import EVENTS_STREAM, PrefectCluster, running_cluster, service_batches

BOTH = ["flow_runs", "task_runs"]
FLOWS = ["flow_runs"]
EQUALITY_TIMEOUT = 60  # reconcile and verify intervals are 5 s
# Burst: how long to keep watching after the server's truth settled; the exporter must become
# exact while watched (no further time limit). The 30 s promise after a burst (issue 3) is
# asserted by test_live's burst on one server. Here the websocket exporter reads replica 1,
# which learns of replica 2's events through Redis: on 2 cores it was once exact 32 s after the
# persister had stored every event, with every event arriving on the stream (none repaired,
# every verify window matched); a 30 s limit here timed Prefect's delivery as much as the
# exporter and failed 1 clean-clone run in 7.
OBSERVE_CAP = 90
REPAIRED = "prefect_exporter_events_repaired_total"
GROUP = "prefect-events-exporter"  # the exporter's default --redis-group
VERIFY_WINDOWS = "prefect_exporter_verify_windows_total"


@pytest.fixture(scope="session", autouse=True)
def _exporter_binary():
    """Fail at once, before any service starts, when PREFECT_EXPORTER_BIN is missing."""
    exporter_bin()


@pytest.fixture(scope="module")
def cluster(e2e_root):
    with running_cluster(e2e_root, name="topo", extra_env=service_batches()) as c:
        t = c.timings
        summary(f"TOPOLOGY-CLUSTER: up in {t['total']:.1f} s (postgres {t['postgres']:.1f}, redis {t['redis']:.1f}, "
                f"upgrade {t['upgrade']:.1f}, api1 {t['topo-api1']:.1f}, api2 {t['topo-api2']:.1f}, "
                f"services {t['services']:.1f})")
        yield c


@pytest.fixture(scope="module")
def exporter(cluster: PrefectCluster):
    """`run --prefect-api-url <replica 1>/api --task-runs`, started on the fresh cluster; it
    must exit 0 on SIGTERM at the end."""
    exp = Exporter(cluster.replicas[0], task_runs=True, name="exporter-api1")
    try:
        exp.wait_listening()
        log(f"{exp.name} ready after {exp.wait_ready(60):.1f} s (listening on :{exp.port})")
        yield exp
    finally:
        was_alive = exp.proc.poll() is None
        rc = exp.stop()
        if os.environ.get("PREFECT_E2E_KEEP"):  # beside the cluster's logs
            (cluster.root / f"{exp.name}.log").write_text(exp.log_text(last=10**9))
    if was_alive and rc != 0:
        pytest.fail(f"{exp.name} exited {rc} on SIGTERM\n{exp.log_text(50)}", pytrace=False)


class RedisExporter:
    """The Redis-source exporter (`--redis-url`, `--state-file`), restartable in place."""

    def __init__(self, cluster: PrefectCluster, state: str) -> None:
        self.cluster = cluster
        self.state = state
        self.restarts = 0
        self.exp = self._start()

    def _start(self) -> Exporter:
        name = "exporter-redis" + (f"-{self.restarts}" if self.restarts else "")
        return Exporter(self.cluster.replicas[0], task_runs=True, name=name,
                        extra_args=["--redis-url", self.cluster.redis.url(0),
                                    "--state-file", self.state, "--snapshot-interval", "2s"])

    def kill_and_restart(self) -> None:
        """SIGKILL (no last snapshot, nothing acknowledged since the last one), then start
        again from the state file."""
        self.exp.proc.kill()
        self.exp.proc.wait(timeout=15)
        self.restarts += 1
        self.exp = self._start()
        self.exp.wait_listening()
        self.exp.wait_ready(60)


@pytest.fixture(scope="module")
def redis_exporter(cluster: PrefectCluster, tmp_path_factory):
    """`run --prefect-api-url <replica 1>/api --redis-url <cluster's Redis> --task-runs
    --state-file …`, started on the fresh cluster; it must exit 0 on SIGTERM at the end."""
    holder = RedisExporter(cluster, str(tmp_path_factory.mktemp("redis-exporter") / "state.bin"))
    try:
        holder.exp.wait_listening()
        log(f"exporter-redis ready after {holder.exp.wait_ready(60):.1f} s (listening on :{holder.exp.port})")
        yield holder
    finally:
        exp = holder.exp
        was_alive = exp.proc.poll() is None
        rc = exp.stop()
    if was_alive and rc != 0:
        pytest.fail(f"{exp.name} exited {rc} on SIGTERM\n{exp.log_text(50)}", pytrace=False)


@pytest.fixture(autouse=True)
def _logs_on_failure(request, cluster, exporter, redis_exporter):
    """A failed test's report gets the exporters' stderr and every cluster process's log."""
    artifacts(request).extend([exporter, redis_exporter.exp, *cluster.parts()])


def redis_exact(api1, redis_exp: Exporter, what: str) -> tuple[dict, float, str]:
    """Waits until the Redis-source exporter equals replica 1's truth (totals and entries of
    both kinds); returns its counts, the seconds waited and a summary of its own metrics."""
    _, took = wait_until_equal(
        lambda: exporter_view(redis_exp.counts(), BOTH, entries=True),
        lambda: truth_view(api1, BOTH, entries=True),
        EQUALITY_TIMEOUT,
        f"{what}, Redis-source exporter: flow_runs and task_runs (totals and entries)",
        context=exporter_context(redis_exp),
    )
    counts = redis_exp.counts()
    assert counts["stream"]["source"] == "redis", counts["stream"]
    # A consumer group cannot drop an entry: verification never has anything to repair.
    assert redis_exp.metric_sum(REPAIRED) == 0, f"{what}: the Redis-source exporter repaired events"
    metrics = (f"repaired={int(redis_exp.metric_sum(REPAIRED))} "
               f"gaps={int(redis_exp.metric_sum('prefect_exporter_backfill_gaps_total'))} "
               f"events_received={counts['events'].get('received')} "
               f"duplicates={counts['events'].get('duplicates')}")
    return counts, took, metrics


def plus(base: dict[str, int], extra: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


# ====================================================================== mixed


def test_mixed_flows_on_replica2_exact_via_replica1(cluster, exporter, redis_exporter, workloads):
    api1, api2 = cluster.replicas
    fresh = api1.rest.count("flow_runs") == 0 and api1.rest.count("task_runs") == 0
    require(fresh, "the cluster is fresh (this test runs first in the module)")

    # Completed, failed, flow retry, task retry, a parent with two subflows (wrapper task runs
    # without events), tasks: all through replica 2.
    t0 = time.monotonic()
    out = workloads(api2, "mixed").check(180)
    t_flows = time.monotonic() - t0
    log("mixed workload: " + " | ".join(line for line in out.splitlines() if line.startswith("WORKLOAD")))

    truth = wait_quiescent(api1, BOTH, timeout=120)
    t_quiet = time.monotonic() - t0
    flows, tasks = truth["flow_runs"], truth["task_runs"]
    require(flows["by_state_type"].get("COMPLETED", 0) >= 1 and flows["by_state_type"].get("FAILED", 0) >= 1,
            f"completed and failed flow runs: {flows}")
    for name in ("Pending", "Running", "Completed", "Failed", "AwaitingRetry"):
        require(flows["entries_by_state_name"].get(name, 0) >= 1, f"a stored flow-run.{name} event: {flows}")
    for name in ("AwaitingRetry", "Retrying", "Failed", "Completed"):
        require(tasks["entries_by_state_name"].get(name, 0) >= 1, f"a stored task-run.{name} event: {tasks}")
    for kind in BOTH:
        api1.rest.cross_check(kind, truth[kind])
    # Both replicas answer from the same database.
    require(api2.rest.truth("flow_runs") == {k: v for k, v in flows.items() if k != "entries_by_state_name"},
            "replica 2's REST agrees with replica 1's")
    log(f"REST truth (replica 1): {truth}")

    _, took = wait_until_equal(
        lambda: exporter_view(exporter.counts(), BOTH, entries=True),
        lambda: truth_view(api1, BOTH, entries=True),
        EQUALITY_TIMEOUT,
        "mixed flows on replica 2, exporter on replica 1: flow_runs and task_runs (totals and entries)",
        context=exporter_context(exporter),
    )
    _, redis_took, redis_metrics = redis_exact(api1, redis_exporter.exp, "mixed flows on replica 2")
    assert exporter.counts()["stream"]["source"] == "websocket"
    summary(f"TOPOLOGY-MIXED-REDIS: Redis-source exporter == REST and stored events {redis_took:.1f} s after "
            f"the websocket one; {redis_metrics}")
    counts = exporter.counts()
    summary(
        f"TOPOLOGY-MIXED: exporter == REST and stored events {took:.1f} s after quiescence "
        f"(flows ran {t_flows:.1f} s, server quiescent after {t_quiet:.1f} s); "
        f"repaired={int(exporter.metric_sum(REPAIRED))} events_received={counts['events'].get('received')}; "
        f"flow runs {flows['by_state_name']}, task runs {tasks['by_state_name']}"
    )


# ====================================================================== burst


def test_burst_on_replica2_exact_via_replica1(cluster, exporter, redis_exporter, workloads, tmp_path):
    api1, api2 = cluster.replicas
    flows_n, tasks_n = 8, 150

    # Whatever earlier tests left must be settled first: the burst's expected stored events
    # are "before + the burst's own".
    before = wait_quiescent(api1, FLOWS, timeout=120)
    flow_events_before = before["flow_runs"]["entries_by_state_name"]
    task_events_before = api1.rest.state_event_counts(TASK_RUN_PREFIX)
    events_before = exporter.counts()["events"]
    received_before = events_before.get("received", 0)
    duplicates_before = events_before.get("duplicates", 0)
    repaired_before = exporter.metric_sum(REPAIRED)

    # Eight flow processes run through replica 2, released together from a barrier. The
    # Redis-source exporter is killed with SIGKILL once it has taken in 500 events of the
    # burst (or when the burst ends first) and restarted from its state file.
    redis_before = redis_exporter.exp.counts()["events"].get("received", 0)
    killed = {}

    def kill_mid_burst(running) -> None:
        t_go = time.monotonic()
        while running():
            if redis_exporter.exp.counts()["events"].get("received", 0) - redis_before >= 500:
                break
            time.sleep(0.05)
        killed["mid_burst"] = running()
        redis_exporter.kill_and_restart()
        log(f"exporter-redis killed {'mid-burst' if killed['mid_burst'] else 'after the burst'} "
            f"{time.monotonic() - t_go:.1f} s after go, restarted from its state file")

    burst = start_burst(workloads, api2, tmp_path, flows_n, tasks_n, during=kill_mid_burst)
    killed_mid_burst = killed["mid_burst"]

    # The server's own truth is complete only once the services process has stored every
    # event (event persister) and written every task run (task-run recorder). Both are known
    # exactly: each burst flow run and task run went Pending -> Running -> Completed.
    each = {"Completed": 1, "Pending": 1, "Running": 1}
    expected_flow_events = plus(flow_events_before, {k: v * flows_n for k, v in each.items()})
    expected_task_events = plus(task_events_before, {k: v * flows_n * tasks_n for k, v in each.items()})

    watch = watch_until_exact(exporter, api1, burst, expected_flow_events, expected_task_events, OBSERVE_CAP)

    counts = exporter.counts()
    repaired = exporter.metric_sum(REPAIRED) - repaired_before
    received = counts["events"].get("received", 0) - received_before
    duplicates = counts["events"].get("duplicates", 0) - duplicates_before
    windows = {r: int(exporter.metric_sum(VERIFY_WINDOWS, result=r)) for r in ("match", "repaired", "failed")}

    summary(
        f"TOPOLOGY-BURST: repaired={int(repaired)} seconds_to_exact={burst.since_last(watch.t_exact)} "
        f"(seconds after the last flow finished; the server had every event stored after "
        f"{burst.since_last(watch.t_events)} s and every task run in REST after {burst.since_last(watch.t_rest)} s; "
        f"events_received={received} duplicates={duplicates} verify_windows(module)={windows} "
        f"reconnects={counts['stream'].get('reconnects')} "
        f"flows={flows_n} tasks_per_flow={tasks_n} burst_seconds={burst.t_last - burst.t_go:.1f})"
    )
    check_exact_in_time(watch, burst, api1, expected_flow_events, expected_task_events, OBSERVE_CAP, None)

    # The Redis-source exporter, killed and restarted during the burst, against the same
    # settled truth: totals and entries of both kinds (an event counted twice would show in
    # the entries; one lost, in the totals and entries).
    _, redis_took, redis_metrics = redis_exact(api1, redis_exporter.exp, "burst, killed and restarted")
    summary(f"TOPOLOGY-BURST-REDIS: killed {'mid-burst' if killed_mid_burst else 'after the burst'}, restarted, "
            f"exact {redis_took:.1f} s after the websocket exporter; {redis_metrics}")


def test_second_redis_exporter_in_the_same_group_is_refused(cluster, redis_exporter):
    """Issue 13, test 4: a second Redis-source exporter in the module's exporter's consumer
    group (the default `--redis-group`) reads nothing and says why, in /readyz and once in its
    log; the module's exporter stays ready and exact."""
    api1 = cluster.replicas[0]
    first = redis_exporter.exp
    second = Exporter(api1, task_runs=True, name="exporter-redis-second",
                      extra_args=["--redis-url", cluster.redis.url(0)])
    try:
        second.wait_listening()
        reason = ("is reading group 'prefect-events-exporter' of stream 'events': "
                  "give each exporter its own --redis-group")
        deadline = time.monotonic() + 60
        status, body = None, None
        while time.monotonic() < deadline:
            second.assert_alive()
            status, body = second.readyz()
            if status == 503 and reason in json.dumps(body):
                break
            time.sleep(0.2)
        assert status == 503 and reason in json.dumps(body), (status, body, second.log_text(40))
        assert "another consumer (prefect-events-exporter-" in json.dumps(body), body
        refused = body
        errors = [line for line in second.stderr_since(0) if '"ERROR"' in line and reason in line]
        assert len(errors) == 1, second.log_text(40)
        # It never joined the group: no consumer of its process (names carry the pid). Its
        # REST verification may still fetch events the server stored, but the stream is
        # read by the first exporter alone.
        with cluster.redis.client() as c:
            consumers = [x["name"] for x in c.xinfo_consumers(EVENTS_STREAM, GROUP)]
        assert not [n for n in consumers if f"-{second.proc.pid}-" in n], consumers
        counts = second.counts()
        assert counts["stream"]["connected"] is False, counts["stream"]
        status, body = first.readyz()
        assert status == 200, body
        _, took, _ = redis_exact(api1, first, "beside a refused second exporter")
        summary(f"TOPOLOGY-REDIS-GROUP: a second exporter in the group refused: {refused!r}; "
                f"the first exact ({took:.1f} s)")
    finally:
        was_alive = second.proc.poll() is None
        rc = second.stop()
    assert not was_alive or rc == 0, f"{second.name} exited {rc} on SIGTERM\n{second.log_text(50)}"
