"""Fixtures for the end-to-end tests (helpers are in support.py).

Servers, exporters and flow subprocesses started through these fixtures are stopped when the
fixture ends, whether the test passed or not; anything still alive at session end is killed.
When a test fails, the exporter's stderr, the server log tail and the flows' output are
attached to its report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import pytest

from support import (
    PROCS,
    SUMMARY,
    artifacts,
    PYTHON,
    Exporter,
    PrefectServer,
    Workload,
    clean_env,
    log,
    popen,
    stop_process,
    tail,
)


@pytest.fixture(scope="session")
def e2e_root() -> Iterable[Path]:
    root = Path(tempfile.mkdtemp(prefix="prefect-e2e-"))
    log(f"temp root {root}")
    yield root
    PROCS.kill_all()
    if os.environ.get("PREFECT_E2E_KEEP"):
        log(f"kept {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(e2e_root: Path) -> Optional[Path]:
    """An empty, fully migrated database: each new server copies it and starts in ~7 s
    instead of migrating a fresh one (~16 s). None (fresh start) if it cannot be made."""
    home = e2e_root / "template"
    home.mkdir()
    env = clean_env()
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    t0 = time.monotonic()
    with open(home / "upgrade.log", "wb") as out:
        proc = popen(
            [PYTHON, "-m", "prefect", "server", "database", "upgrade", "-y"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
        try:
            rc = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            rc = None
    db = home / "prefect.db"
    if rc != 0 or not db.exists():
        log(f"template database failed (rc {rc}); servers will start fresh\n{tail(home / 'upgrade.log')}")
        return None
    log(f"template database migrated in {time.monotonic() - t0:.1f} s")
    return db


@pytest.fixture(scope="session")
def server_factory(e2e_root: Path, template_db: Optional[Path]):
    """Make (and later stop) Prefect servers: factory(name, auth_string=None)."""
    servers: list[PrefectServer] = []

    def make(name: str, auth_string: Optional[str] = None, start: bool = True, **kw: Any) -> PrefectServer:
        server = PrefectServer(e2e_root, name, auth_string=auth_string, template_db=template_db, **kw)
        servers.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def servers(server_factory, request):
    """A server for one test only: servers("name", auth_string=None); stopped after the test."""
    made: list[PrefectServer] = []

    def make(name: str, **kw: Any) -> PrefectServer:
        server = server_factory(name, start=False, **kw)
        made.append(server)
        artifacts(request).append(server)
        server.start()
        return server

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def workloads(request):
    """Start flow subprocesses: workloads(server, "mixed") -> Workload; all stopped at the end."""
    started: list[Workload] = []

    def start(server: PrefectServer, *args: str, name: Optional[str] = None, env: Optional[dict[str, str]] = None) -> Workload:
        wl = Workload(server, list(args), name or args[0], env)
        started.append(wl)
        artifacts(request).append(wl)
        return wl

    yield start
    for wl in started:
        wl.stop()


@pytest.fixture
def exporters(request):
    """Start exporters: exporters(server, task_runs=True, auth_string=...); all stopped at the
    end, and each must exit 0 on SIGTERM (checked when the test itself passed)."""
    started: list[Exporter] = []

    def start(server: PrefectServer, **kw: Any) -> Exporter:
        exp = Exporter(server, **kw)
        started.append(exp)
        arts = artifacts(request)
        arts.append(exp)
        if server not in arts:
            arts.append(server)
        exp.wait_listening()
        log(f"{exp.name} listening on :{exp.port}")
        return exp

    yield start
    bad = []
    for exp in started:
        was_alive = exp.proc.poll() is None
        rc = exp.stop()
        if was_alive and rc != 0:
            bad.append(f"{exp.name} exited {rc} on SIGTERM")
    rep = getattr(request.node, "rep_call", None)
    if bad and rep is not None and rep.passed:
        pytest.fail("; ".join(bad) + "\n" + "\n".join(e.log_text(50) for e in started))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
    if rep.failed:
        for art in getattr(item, "e2e_artifacts", []):
            try:
                title, text = art.describe()
            except Exception as exc:  # never hide the real failure
                title, text = repr(art), f"<describe failed: {exc!r}>"
            rep.sections.append((title, text))


def pytest_terminal_summary(terminalreporter):
    if SUMMARY:
        terminalreporter.section("e2e results")
        for line in SUMMARY:
            terminalreporter.write_line(line)
