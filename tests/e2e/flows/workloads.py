"""Real Prefect flows for the end-to-end tests, run as subprocesses.

Every command runs with the test server's environment (PREFECT_API_URL, PREFECT_HOME, and
PREFECT_API_AUTH_STRING when the server has auth). Commands that run flows exit 0 even when
the flows end Failed on purpose; any other exit code is a harness error.

    python workloads.py mixed              completed, failed, flow retry, task retry, subflows
    python workloads.py simple --flows N --tasks M --sleep S
    python workloads.py steady --tasks N --gap S   one flow, N tasks in sequence, S s apart
    python workloads.py burst --tasks N    one flow with N tasks submitted together (with
                                           --ready-file/--go-file: a start barrier)
    python workloads.py serve --name NAME  serve the `e2e-victim` flow as deployment
                                           `e2e-victim/NAME` until SIGTERM
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from prefect import flow, task
from prefect.runtime import flow_run as runtime_flow_run
from prefect.runtime import task_run as runtime_task_run


# ---------------------------------------------------------------- tasks


@task
def add(x: int, y: int) -> int:
    return x + y


@task
def boom() -> None:
    raise ValueError("task failed on purpose")


@task(retries=2, retry_delay_seconds=1)
def flaky_task() -> str:
    # Fails on its first attempt only: Running -> AwaitingRetry -> Retrying -> Completed.
    # (With retry_delay_seconds=0 Prefect skips AwaitingRetry and goes straight to Retrying.)
    if runtime_task_run.run_count <= 1:
        raise RuntimeError("first attempt fails on purpose")
    return "ok"


@task
def tiny(i: int) -> int:
    return i


# ---------------------------------------------------------------- flows


@flow(name="e2e-completed")
def completed_flow() -> int:
    a = add(1, 2)
    b = add.submit(a, 3).result()
    return b


@flow(name="e2e-failed")
def failed_flow() -> None:
    add(1, 1)
    boom()


@flow(name="e2e-flow-retry", retries=1, retry_delay_seconds=1)
def flow_retry_flow() -> str:
    # Fails on its first run only: Running -> AwaitingRetry -> Running -> Completed (a flow's
    # second attempt is named "Running", not "Retrying"; with a 0 s delay as well).
    add(2, 2)
    if runtime_flow_run.run_count <= 1:
        raise RuntimeError("first flow attempt fails on purpose")
    return "ok"


@flow(name="e2e-task-retry")
def task_retry_flow() -> str:
    return flaky_task()


@flow(name="e2e-child")
def child_flow(i: int) -> int:
    return add(i, i)


@flow(name="e2e-parent")
def parent_flow() -> int:
    # Each child call is a subflow: the parent gets one wrapper task run per child, and those
    # wrapper task runs never emit task-run events.
    total = 0
    for i in range(2):
        total += child_flow(i)
    total += add(total, 1)
    return total


@flow(name="e2e-simple")
def simple_flow(tasks: int, sleep: float) -> int:
    futures = [tiny.submit(i) for i in range(tasks)]
    if sleep:
        time.sleep(sleep)
    return sum(f.result() for f in futures)


@flow(name="e2e-steady")
def steady_flow(tasks: int, gap: float) -> int:
    """Tasks one after another with a pause between them: a run that spans a server restart."""
    total = 0
    for i in range(tasks):
        total += tiny(i)
        time.sleep(gap)
    return total


@flow(name="e2e-burst")
def burst_flow(tasks: int) -> int:
    futures = [tiny.submit(i) for i in range(tasks)]
    return sum(f.result() for f in futures)


@flow(name="e2e-victim")
def victim(pidfile: str = "", sleep: float = 120.0) -> str:
    """Runs from a served deployment; the test cancels it or SIGKILLs it while it sleeps."""
    if pidfile:
        tmp = pidfile + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(os.getpid()))
        os.replace(tmp, pidfile)
    # Bounded: the test always ends it long before this.
    deadline = time.monotonic() + sleep
    while time.monotonic() < deadline:
        time.sleep(0.2)
    return "survived"


# ---------------------------------------------------------------- commands


def cmd_mixed(_args: argparse.Namespace) -> int:
    results = {
        "completed": completed_flow(return_state=True),
        "failed": failed_flow(return_state=True),
        "flow_retry": flow_retry_flow(return_state=True),
        "task_retry": task_retry_flow(return_state=True),
        "parent": parent_flow(return_state=True),
    }
    for name, state in results.items():
        print(f"WORKLOAD {name} {state.type.value} {state.name}", flush=True)
    expected = {
        "completed": "COMPLETED",
        "failed": "FAILED",
        "flow_retry": "COMPLETED",
        "task_retry": "COMPLETED",
        "parent": "COMPLETED",
    }
    bad = {k: v.type.value for k, v in results.items() if v.type.value != expected[k]}
    if bad:
        print(f"WORKLOAD unexpected final states: {bad}", file=sys.stderr, flush=True)
        return 3
    return 0


def cmd_simple(args: argparse.Namespace) -> int:
    for _ in range(args.flows):
        state = simple_flow(args.tasks, args.sleep, return_state=True)
        print(f"WORKLOAD simple {state.type.value} {state.name}", flush=True)
        if state.type.value != "COMPLETED":
            return 3
    return 0


def cmd_steady(args: argparse.Namespace) -> int:
    state = steady_flow(args.tasks, args.gap, return_state=True)
    print(f"WORKLOAD steady {state.type.value} {state.name}", flush=True)
    return 0 if state.type.value == "COMPLETED" else 3


def wait_for_go(ready_file: str, go_file: str, timeout: float = 120.0) -> None:
    """Barrier: announce readiness (imports done), then wait for the test's go signal."""
    if ready_file:
        with open(ready_file, "w") as f:
            f.write(str(os.getpid()))
    if go_file:
        deadline = time.monotonic() + timeout
        while not os.path.exists(go_file):
            if time.monotonic() > deadline:
                raise SystemExit(f"no go signal at {go_file} within {timeout} s")
            time.sleep(0.05)


def cmd_burst(args: argparse.Namespace) -> int:
    # The flow run is created before the barrier, not by calling the flow after it: Prefect
    # 3.9.1's `POST /flow_runs/` uses a DEFERRED SQLite transaction that fails at once with
    # "database is locked" (503) while other flows' task events are being written, and the
    # client's exponential back-off then delays late starters by minutes. State changes use
    # BEGIN IMMEDIATE and simply wait for the lock.
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    parameters = {"tasks": args.tasks}
    with get_client(sync_client=True) as client:
        flow_run = client.create_flow_run(burst_flow, parameters=parameters)
    print(f"WORKLOAD burst-run {flow_run.id}", flush=True)
    wait_for_go(args.ready_file, args.go_file)
    state = run_flow(burst_flow, flow_run=flow_run, parameters=parameters, return_type="state")
    print(f"WORKLOAD burst {state.type.value} {state.name}", flush=True)
    return 0 if state.type.value == "COMPLETED" else 3


def cmd_serve(args: argparse.Namespace) -> int:
    # Blocks until SIGTERM/SIGINT. No schedule: runs come only from the test's API calls.
    victim.serve(name=args.name, pause_on_shutdown=False, print_starting_message=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("mixed")
    p = sub.add_parser("simple")
    p.add_argument("--flows", type=int, default=1)
    p.add_argument("--tasks", type=int, default=3)
    p.add_argument("--sleep", type=float, default=0.0)
    p = sub.add_parser("steady")
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--gap", type=float, default=1.0)
    p = sub.add_parser("burst")
    p.add_argument("--tasks", type=int, default=150)
    p.add_argument("--ready-file", default="")
    p.add_argument("--go-file", default="")
    p = sub.add_parser("serve")
    p.add_argument("--name", required=True)
    args = parser.parse_args()
    return {
        "mixed": cmd_mixed,
        "simple": cmd_simple,
        "steady": cmd_steady,
        "burst": cmd_burst,
        "serve": cmd_serve,
    }[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
