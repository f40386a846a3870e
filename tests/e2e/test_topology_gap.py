"""End-to-end, issue 13 test 3: a Redis-source exporter across the two ways Prefect's `events`
stream loses entries it has not read, on the production topology (topology.py).

1. Redis restarted mid-workload (no persistence, as Prefect's documented setup: the stream and
   every consumer group are gone). The exporter's group is missing when it reconnects although
   it had a position: a gap.
2. The exporter stopped for longer than Prefect's trimming idle threshold while flows run:
   Prefect's consumers leave its idle group out of the trim and cut the stream past entries it
   had not read. When it starts again from its state file the stream's first entry lies past
   its group's position: a gap.

Each gap must be counted (`prefect_exporter_backfill_gaps_total`) and closed by verification
(stored events re-fetched from the resume point) and reconciliation (REST totals): after each,
the exporter's totals by state type and name, flow runs and task runs, equal replica 1's REST.
And the entries the exporter added while it was down equal the state events the server stored
meanwhile: the stream no longer held them, so only verification can have brought them back.
(Entries since the start are not compared: an event that Redis dropped in its restart after
the exporter read it and before the services process stored it is in no truth.)

Prefect's trimming is shortened for the test (`PREFECT_REDIS_MESSAGING_CONSUMER_TRIM_IDLE_THRESHOLD`
and `…_TRIM_EVERY`, read by prefect-redis 0.3.0's `RedisMessagingConsumerSettings`), so the
exporter is down for seconds, not five minutes. Its own cluster: restarting Redis would disturb
test_topology.py's exporters.
"""

from __future__ import annotations

import time

import pytest

from support import (
    FLOW_RUN_PREFIX,
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
    wait_for,
    wait_quiescent,
    wait_until_equal,
)
from topology import EVENTS_STREAM, PrefectCluster, running_cluster, service_batches

BOTH = ["flow_runs", "task_runs"]
GAPS = "prefect_exporter_backfill_gaps_total"
REPAIRED = "prefect_exporter_events_repaired_total"
# Prefect leaves a group out of its trim once every consumer of it has received nothing for
# this long (default 300 s), and each consumer trims at most this often (default 60 s).
TRIM_IDLE_SECONDS = 10
TRIM_EVERY_SECONDS = 2
EXACT_TIMEOUT = 90  # verify and reconcile every 5 s; verification settles 15 s
GROUP = "prefect-events-exporter"  # the exporter's default --redis-group


@pytest.fixture(scope="session", autouse=True)
def _exporter_binary():
    exporter_bin()


@pytest.fixture(scope="module")
def cluster(e2e_root):
    env = service_batches()
    env.update(
        PREFECT_REDIS_MESSAGING_CONSUMER_TRIM_IDLE_THRESHOLD=str(TRIM_IDLE_SECONDS),
        PREFECT_REDIS_MESSAGING_CONSUMER_TRIM_EVERY=str(TRIM_EVERY_SECONDS),
    )
    with running_cluster(e2e_root, name="gap", extra_env=env) as c:
        summary(f"TOPOLOGY-GAP-CLUSTER: up in {c.timings['total']:.1f} s")
        yield c


def stream_id(text: str) -> tuple[int, int]:
    """A stream id as (ms, seq) integers (never compare ids as strings)."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def trimmed_past_group(cluster: PrefectCluster) -> bool:
    """Redis itself says entries the exporter's group was never delivered are gone: the
    stream's first entry lies past the group's last-delivered id, and entries were added after
    that id."""
    with cluster.redis.client() as c:
        groups = {g["name"]: g for g in c.xinfo_groups(EVENTS_STREAM)}
        info = c.xinfo_stream(EVENTS_STREAM)
    group = groups.get(GROUP)
    if group is None or info.get("first-entry") is None:
        return False
    position = stream_id(group["last-delivered-id"])
    first = stream_id(info["first-entry"][0])
    return first > position and stream_id(info["last-generated-id"]) > position


class GapExporter:
    """The Redis-source exporter with a state file, stoppable and restartable in place."""

    def __init__(self, cluster: PrefectCluster, state: str, request) -> None:
        self.cluster = cluster
        self.state = state
        self.request = request
        self.starts = 0
        self.exp = self.start()

    def start(self) -> Exporter:
        self.starts += 1
        exp = Exporter(self.cluster.replicas[0], task_runs=True, name=f"exporter-gap-{self.starts}",
                       extra_args=["--redis-url", self.cluster.redis.url(0),
                                   "--state-file", self.state, "--snapshot-interval", "2s"])
        artifacts(self.request).append(exp)
        self.exp = exp
        exp.wait_listening()
        log(f"{exp.name} ready after {exp.wait_ready(60):.1f} s (listening on :{exp.port})")
        return exp

    def stop(self) -> None:
        """SIGTERM: the last snapshot is written and its entries acknowledged; exit 0."""
        rc = self.exp.stop()
        assert rc == 0, f"{self.exp.name} exited {rc} on SIGTERM\n{self.exp.log_text(50)}"


@pytest.fixture
def gap_exporter(cluster: PrefectCluster, tmp_path, request):
    holder = GapExporter(cluster, str(tmp_path / "state.bin"), request)
    artifacts(request).extend(cluster.parts())
    try:
        yield holder
    finally:
        exp = holder.exp
        was_alive = exp.proc.poll() is None
        rc = exp.stop()
    if was_alive and rc != 0:
        pytest.fail(f"{exp.name} exited {rc} on SIGTERM\n{exp.log_text(50)}", pytrace=False)


def totals_exact(api1, exp: Exporter, what: str) -> float:
    """Waits until the exporter's totals (by state type and name, both kinds) equal replica
    1's REST; returns the seconds waited."""
    _, took = wait_until_equal(
        lambda: exporter_view(exp.counts(), BOTH),
        lambda: truth_view(api1, BOTH),
        EXACT_TIMEOUT,
        f"{what}: flow_runs and task_runs totals",
        context=exporter_context(exp),
    )
    return took


def entries(counts: dict) -> dict[str, dict[str, int]]:
    """The exporter's entries by state name, both kinds."""
    return {kind: {k: v for k, v in (counts[kind].get("entries_by_state_name") or {}).items() if v}
            for kind in BOTH}


def stored(api1) -> dict[str, dict[str, int]]:
    """The state events the server stored, by state name, both kinds."""
    return {"flow_runs": api1.rest.state_event_counts(FLOW_RUN_PREFIX),
            "task_runs": api1.rest.state_event_counts(TASK_RUN_PREFIX)}


def added(now: dict, before: dict) -> dict[str, dict[str, int]]:
    """Per kind and name, what `now` holds beyond `before` (non-zero only)."""
    out = {}
    for kind in BOTH:
        names = set(now[kind]) | set(before[kind])
        delta = {n: now[kind].get(n, 0) - before[kind].get(n, 0) for n in sorted(names)}
        out[kind] = {n: d for n, d in delta.items() if d}
    return out


def test_redis_restart_and_an_exporter_down_past_the_trim_threshold_are_gaps_counted_and_closed(
        cluster, gap_exporter, workloads):
    api1, api2 = cluster.replicas
    exp = gap_exporter.exp
    require(api1.rest.count("flow_runs") == 0, "the cluster is fresh")
    t0 = time.monotonic()

    # ---- 1. Redis restarted mid-workload, the exporter running.
    steady = workloads(api2, "steady", "--tasks", "24", "--gap", "0.5", name="steady")
    mixed = workloads(api2, "mixed")
    wait_for(lambda: exp.counts()["events"].get("received", 0) >= 10 or steady.poll() is not None,
             90, "the exporter receiving the workload's events")
    require(steady.poll() is None, "the steady flow still runs when Redis is restarted")
    received_before_restart = exp.counts()["events"].get("received", 0)
    stopped, started = cluster.redis.restart()
    log(f"redis restarted mid-workload (stop {stopped:.2f} s, start {started:.2f} s) after the exporter "
        f"received {received_before_restart} events")
    wait_for(lambda: exp.metric_sum(GAPS) >= 1, 60, "the lost consumer group counted as a gap")
    wait_for(lambda: exp.counts()["stream"].get("connected"), 60, "the exporter reading Redis again")
    # Prefect's consumers re-create their groups after the restart (prefect-redis reconnects).
    wait_for(cluster.services.consuming, 60, "Prefect's consumer groups back on the new stream")
    steady_out = steady.check(180)
    mixed.check(180)
    require("COMPLETED" in steady_out, f"the steady flow completed across the Redis restart: {steady_out}")
    wait_quiescent(api1, BOTH, timeout=120)
    took_1 = totals_exact(api1, exp, "after the Redis restart")
    gaps_1 = exp.metric_sum(GAPS)
    repaired_1 = exp.metric_sum(REPAIRED)
    log(f"after the Redis restart: exact {took_1:.1f} s after quiescence; gaps={gaps_1:.0f} repaired={repaired_1:.0f}")

    # ---- 2. The exporter down for longer than the trimming idle threshold, flows running.
    entries_1, stored_1 = entries(exp.counts()), stored(api1)
    gap_exporter.stop()
    t_down = time.monotonic()
    workloads(api2, "simple", "--flows", "3", "--tasks", "4", name="simple").check(180)
    # Down for longer than the threshold, and Prefect has trimmed the stream past what the
    # group was never delivered. (The trim can come sooner: Redis 7.0 measures a consumer's
    # idle time since it last *received* entries, so a caught-up exporter on a quiet stream
    # already counted as idle before it stopped; REDIS-NOTES.md.)
    wait_for(lambda: time.monotonic() - t_down > TRIM_IDLE_SECONDS and trimmed_past_group(cluster),
             TRIM_IDLE_SECONDS + 60, "the exporter down past the threshold and the stream trimmed past its group")
    down = time.monotonic() - t_down
    exp = gap_exporter.start()
    wait_for(lambda: exp.metric_sum(GAPS) >= gaps_1 + 1, 60, "the trimmed entries counted as a gap")
    wait_quiescent(api1, BOTH, timeout=120)
    took_2 = totals_exact(api1, exp, "after the exporter was down past the trim threshold")
    stored_2 = stored(api1)
    while_down = added(stored_2, stored_1)
    require(while_down["flow_runs"] and while_down["task_runs"],
            f"the server stored state events of both kinds while the exporter was down: {while_down}")
    wait_until_equal(
        lambda: added(entries(exp.counts()), entries_1),
        lambda: added(stored(api1), stored_1),
        EXACT_TIMEOUT,
        "entries added while the exporter was down (trimmed from the stream) == state events stored meanwhile",
        context=exporter_context(exp),
    )
    repaired_2 = exp.metric_sum(REPAIRED) - repaired_1
    assert repaired_2 > 0, "the trimmed events came back, yet verification repaired nothing"
    counts = exp.counts()
    assert counts["stream"]["source"] == "redis", counts["stream"]
    summary(
        f"TOPOLOGY-GAP: Redis restart mid-workload then exporter down {down:.1f} s "
        f"(trim idle threshold {TRIM_IDLE_SECONDS} s): gaps={exp.metric_sum(GAPS):.0f} "
        f"repaired={repaired_1:.0f}+{repaired_2:.0f} (stored while down: {while_down}) exact {took_1:.1f} s / {took_2:.1f} s after quiescence; "
        f"test {time.monotonic() - t0:.1f} s; flow runs {counts['flow_runs']['by_state_name']}, "
        f"task runs {counts['task_runs']['by_state_name']}"
    )
