"""End-to-end on Prefect's production topology: PostgreSQL, Redis messaging (prefect-redis),
two API replicas (`prefect server start --no-services`) and one `prefect server services
start` (topology.py).

The exporter subscribes to replica 1's websocket; flows run against replica 2, so every event
the exporter sees crossed Redis from the other replica. Truth is replica 1's REST
(`/flow_runs/filter`, `/task_runs/filter`, all pages, cross-checked with `/count`) and the
events the services process stored (`/events/count-by/event`), never the exporter's output.

One cluster and one exporter for the module: the exporter starts on the fresh cluster, so its
entries compare with every stored state event through both tests.
"""

from __future__ import annotations

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
from topology import PrefectCluster, running_cluster

BOTH = ["flow_runs", "task_runs"]
FLOWS = ["flow_runs"]
EQUALITY_TIMEOUT = 60  # reconcile and verify intervals are 5 s
EXACT_WITHIN = 30  # burst: seconds after the server's truth is complete
OBSERVE_CAP = 90  # burst: how long to keep watching after the truth settled
REPAIRED = "prefect_exporter_events_repaired_total"
VERIFY_WINDOWS = "prefect_exporter_verify_windows_total"


@pytest.fixture(scope="session", autouse=True)
def _exporter_binary():
    """Fail at once, before any service starts, when PREFECT_EXPORTER_BIN is missing."""
    exporter_bin()


def service_batches() -> dict[str, str]:
    """Read and write batches of 100 for the services process's event consumers.

    Prefect's defaults read one Redis entry per XREADGROUP call and write one task run per
    transaction: after the burst, the services process (one Python process, sharing the two
    cores with everything else) had every event stored 60 s and every task run in REST 154 s
    after the last flow ended. Batches change how fast the server's truth completes, not what
    it says. PREFECT_E2E_DEFAULT_RECORDER=1 keeps Prefect's defaults (as in test_live.py)."""
    if os.environ.get("PREFECT_E2E_DEFAULT_RECORDER"):
        return {}
    return {
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "100",
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "100",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
        "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
        "PREFECT_SERVER_SERVICES_TRIGGERS_READ_BATCH_SIZE": "100",
    }


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


@pytest.fixture(autouse=True)
def _logs_on_failure(request, cluster, exporter):
    """A failed test's report gets the exporter's stderr and every cluster process's log."""
    artifacts(request).extend([exporter, *cluster.parts()])


def plus(base: dict[str, int], extra: dict[str, int]) -> dict[str, int]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = out.get(k, 0) + v
    return dict(sorted(out.items()))


# ====================================================================== mixed


def test_mixed_flows_on_replica2_exact_via_replica1(cluster, exporter, workloads):
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
    counts = exporter.counts()
    summary(
        f"TOPOLOGY-MIXED: exporter == REST and stored events {took:.1f} s after quiescence "
        f"(flows ran {t_flows:.1f} s, server quiescent after {t_quiet:.1f} s); "
        f"repaired={int(exporter.metric_sum(REPAIRED))} events_received={counts['events'].get('received')}; "
        f"flow runs {flows['by_state_name']}, task runs {tasks['by_state_name']}"
    )


# ====================================================================== burst


def test_burst_on_replica2_exact_via_replica1(cluster, exporter, workloads, tmp_path):
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

    # Eight flow processes run through replica 2, released together from a barrier.
    burst = start_burst(workloads, api2, tmp_path, flows_n, tasks_n)

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
    check_exact_in_time(watch, burst, api1, expected_flow_events, expected_task_events, OBSERVE_CAP, EXACT_WITHIN)
