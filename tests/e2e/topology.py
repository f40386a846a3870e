"""Prefect's production topology for the end-to-end tests: PostgreSQL, Redis messaging, several
API replicas and one background-services process.

    PostgreSQL  throwaway cluster (initdb) in a temp dir, 127.0.0.1 on a free port, a `prefect`
                role with a random password owning a `prefect` database (asyncpg URL)
    Redis       redis-server on 127.0.0.1 and a free port, no persistence, dir in a temp dir
    PrefectCluster
                `prefect server database upgrade -y`, then API replicas
                (`prefect server start --no-services`) started one after the other, then one
                `prefect server services start`; all with prefect-redis as message broker,
                cache, causal ordering and lease storage (see PREFECT.md, "Redis messaging and
                several API replicas"), and Docket on Redis database 1 (Prefect's documented HA
                setup)

Every process is started with `support.popen` (own session, recorded in PROCS) and stopped by
its id when its owner stops, and again at session end if still alive. Every wait is a bounded
poll of a real condition. Binaries: PostgreSQL's from `PREFECT_E2E_PG_BIN` (what
`scripts/install-test-services.sh` prints) or /usr/lib/postgresql/<newest>/bin; `redis-server`
from `PREFECT_E2E_REDIS_SERVER` or PATH. PostgreSQL refuses to run as root: as root, its
processes run as the `postgres` OS user in a directory chowned to it.

The database password is random per cluster and never logged: `Postgres.url` holds it, and
`describe()`/logs never print the URL.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

from support import (
    HOST,
    PYTHON,
    PrefectServer,
    clean_env,
    free_port,
    log,
    popen,
    stop_process,
    tail,
)

# Prefect's consumer groups on the `events` stream (`prefect server services start`).
EVENT_GROUPS = ("event-persister", "reactive-triggers", "task-run-recorder")
EVENTS_STREAM = "events"


# ------------------------------------------------------------------ binaries


def pg_bin_dir() -> Path:
    """The directory with PostgreSQL's initdb, postgres, psql and pg_isready."""
    needed = ("initdb", "postgres", "psql", "pg_isready")

    def ok(d: Path) -> bool:
        return all(os.access(d / b, os.X_OK) for b in needed)

    configured = os.environ.get("PREFECT_E2E_PG_BIN")
    if configured:
        d = Path(configured)
        if not ok(d):
            pytest.fail(f"PREFECT_E2E_PG_BIN={configured!r} lacks one of {needed}", pytrace=False)
        return d
    candidates = []
    for d in Path("/usr/lib/postgresql").glob("*/bin"):
        if d.parent.name.isdigit():
            candidates.append((int(d.parent.name), d))
    for _, d in sorted(candidates, reverse=True):
        if ok(d):
            return d
    found = shutil.which("initdb")
    if found and ok(Path(os.path.realpath(found)).parent):
        return Path(os.path.realpath(found)).parent
    pytest.fail("PostgreSQL not found: run `bash scripts/install-test-services.sh` (it prints the "
                "directory for PREFECT_E2E_PG_BIN)", pytrace=False)


def redis_server_bin() -> str:
    configured = os.environ.get("PREFECT_E2E_REDIS_SERVER")
    found = configured or shutil.which("redis-server")
    if not found or not os.access(found, os.X_OK):
        pytest.fail("redis-server not found: run `bash scripts/install-test-services.sh` "
                    "(or set PREFECT_E2E_REDIS_SERVER)", pytrace=False)
    return found


def run_bounded(args: list[str], timeout: float, what: str, input: Optional[bytes] = None, **kwargs: Any) -> bytes:
    """Run a short command through popen (tracked), with a deadline; its output on failure."""
    proc = popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
    try:
        out, _ = proc.communicate(input=input, timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_process(proc)
        raise AssertionError(f"{what}: still running after {timeout} s")
    if proc.returncode != 0:
        raise AssertionError(f"{what}: exit {proc.returncode}\n{out.decode(errors='replace')[-3000:]}")
    return out


def _wait(cond, proc: subprocess.Popen, timeout: float, what: str, log_path: Path, interval: float = 0.2) -> float:
    """Poll cond() until truthy while proc lives; returns the seconds taken."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    for _ in range(int(timeout / interval) + 10):
        if proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode}\n--- {log_path}\n{tail(log_path)}")
        if cond():
            return time.monotonic() - t0
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise AssertionError(f"{what}: not ready within {timeout} s\n--- {log_path}\n{tail(log_path)}")


# ------------------------------------------------------------------ PostgreSQL


class Postgres:
    """A throwaway PostgreSQL cluster: initdb on first start; start/stop/restart keep the port
    and the data (a real restart)."""

    def __init__(self, root: Path, name: str = "postgres") -> None:
        self.name = name
        self.bin = pg_bin_dir()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self.data = self.dir / "data"
        self.socket_dir = self.dir  # unix socket here, not in /var/run/postgresql
        self.log_path = self.dir / "postgres.log"
        self.port = free_port()
        self.user = "prefect"
        self.database = "prefect"
        self._password = secrets.token_hex(16)
        self.proc: Optional[subprocess.Popen] = None
        self.initialized = False
        self._as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                pytest.fail("running as root and there is no `postgres` OS user (PostgreSQL refuses "
                            "to run as root): install Debian's postgresql package", pytrace=False)
            self._as_user = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
            # The postgres user must reach its directory: let others traverse (not list) the
            # parent temp dirs made by mkdtemp (0700) — only those below the system temp dir,
            # never anything else — and own its own dir.
            tmp = Path(tempfile.gettempdir()).resolve()
            for parent in (root.resolve(), *root.resolve().parents):
                if tmp not in parent.parents:
                    break
                mode = parent.stat().st_mode & 0o777
                if mode & 0o001 == 0:
                    os.chmod(parent, mode | 0o011)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)

    @property
    def url(self) -> str:
        """Prefect's connection URL (holds the password: never log it)."""
        return f"postgresql+asyncpg://{self.user}:{self._password}@{HOST}:{self.port}/{self.database}"

    def _env(self) -> dict[str, str]:
        env = clean_env()
        env = {k: v for k, v in env.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", PGTZ="UTC")
        return env

    def _initdb(self) -> None:
        t0 = time.monotonic()
        run_bounded(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--encoding=UTF8",
             "--locale=C", "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync"],
            120, "initdb", env=self._env(), cwd=self.dir, **self._as_user,
        )
        conf = "\n".join([
            "",
            "# prefect-events-exporter e2e: a throwaway cluster on loopback",
            f"listen_addresses = '{HOST}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "max_connections = 200",
            # Throwaway data: durability costs only time here.
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "",
        ])
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(conf)
        log(f"{self.name}: initdb in {time.monotonic() - t0:.1f} s")

    def _psql(self, sql: str, what: str) -> bytes:
        # SQL on stdin, so the password never appears in a process's arguments.
        return run_bounded(
            [str(self.bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.socket_dir),
             "-p", str(self.port), "-U", "postgres", "-d", "postgres"],
            60, what, input=sql.encode(), env=self._env(), cwd=self.dir, **self._as_user,
        )

    def ready(self) -> bool:
        try:
            rc = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", HOST, "-p", str(self.port), "-t", "1"],
                env=self._env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, timeout=10,
            ).returncode
        except subprocess.TimeoutExpired:
            return False
        return rc == 0

    def start(self, timeout: float = 60) -> float:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        t0 = time.monotonic()
        if not self.initialized:
            self._initdb()
        with open(self.log_path, "ab") as logf:
            self.proc = popen([str(self.bin / "postgres"), "-D", str(self.data)], env=self._env(),
                              stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir, **self._as_user)
        _wait(self.ready, self.proc, timeout, f"{self.name} on :{self.port}", self.log_path)
        if not self.initialized:
            self._psql(
                f"CREATE ROLE {self.user} LOGIN PASSWORD '{self._password}';\n"
                f"CREATE DATABASE {self.database} OWNER {self.user};\n",
                "create Prefect's role and database",
            )
            self.initialized = True
        took = time.monotonic() - t0
        log(f"{self.name} up on :{self.port} in {took:.1f} s")
        return took

    def stop(self, timeout: float = 30) -> None:
        # SIGINT = fast shutdown (SIGTERM would wait for every client to disconnect).
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout=timeout, sig=signal.SIGINT)

    def restart(self) -> float:
        self.stop()
        return self.start()

    def describe(self) -> tuple[str, str]:
        return (f"{self.name} log (tail)", tail(self.log_path, 40))


# ------------------------------------------------------------------ Redis


class Redis:
    """redis-server on 127.0.0.1 and a free port, its dir in a temp dir.

    Like Prefect's documented setup (`redis-server --appendonly no`), nothing is persisted by
    default: `restart()` keeps the port and, as a real restart of such a server does, loses
    every key (streams, consumer groups, dedup keys). `persistent=True` turns on the
    append-only file so a restart keeps them."""

    def __init__(self, root: Path, name: str = "redis", persistent: bool = False) -> None:
        self.name = name
        self.bin = redis_server_bin()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self.log_path = self.dir / "redis.log"
        self.host = HOST
        self.port = free_port()
        self.persistent = persistent
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0, **kw: Any):
        """A redis-py client (the venv has it through prefect-redis); str responses."""
        import redis

        kw.setdefault("decode_responses", True)
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host=self.host, port=self.port, db=db, **kw)

    def ping(self) -> bool:
        import redis

        try:
            with self.client(socket_timeout=2) as c:
                return bool(c.ping())
        except (redis.RedisError, OSError):
            return False

    def start(self, timeout: float = 30) -> float:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.starts += 1
        t0 = time.monotonic()
        args = [self.bin, "--bind", self.host, "--port", str(self.port), "--save", "",
                "--appendonly", "yes" if self.persistent else "no", "--dir", str(self.dir),
                "--daemonize", "no", "--logfile", ""]
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n==== start #{self.starts} port {self.port} ====\n".encode())
            logf.flush()
            self.proc = popen(args, env=clean_env(), stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir)
        _wait(self.ping, self.proc, timeout, f"{self.name} on :{self.port}", self.log_path, interval=0.05)
        took = time.monotonic() - t0
        log(f"{self.name} up on :{self.port} in {took:.2f} s (start #{self.starts})")
        return took

    def stop(self, timeout: float = 15) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout=timeout)

    def restart(self) -> tuple[float, float]:
        """SIGTERM, then start again on the same port and dir; returns (stop s, start s)."""
        t0 = time.monotonic()
        self.stop()
        stopped = time.monotonic() - t0
        return stopped, self.start()

    def describe(self) -> tuple[str, str]:
        return (f"{self.name} log (tail)", tail(self.log_path, 30))


# ------------------------------------------------------------------ Prefect


class ApiReplica(PrefectServer):
    """One `prefect server start --no-services` of a cluster. A PrefectServer in every other
    respect: `api_url`, `rest` (ground truth), `client_env()` for flows, `stop()`,
    `restart()`, `describe()`, so support.py's helpers take it as they take a server."""

    def __init__(self, cluster: "PrefectCluster", name: str) -> None:
        super().__init__(cluster.root, name)
        self.cluster = cluster

    def server_env(self) -> dict[str, str]:
        env = super().server_env()
        env.update(self.cluster.prefect_env())
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120) -> float:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.starts += 1
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n==== start #{self.starts} port {self.port} ====\n".encode())
            logf.flush()
            self.proc = popen(
                [PYTHON, "-m", "prefect", "server", "start", "--host", HOST, "--port", str(self.port),
                 "--no-services"],
                env=self.server_env(), stdout=logf, stderr=subprocess.STDOUT, cwd=self.home,
            )
        _wait(self.healthy, self.proc, timeout, f"API replica {self.name} on :{self.port}", self.log_path, 0.25)
        took = time.monotonic() - t0
        log(f"API replica {self.name} healthy on :{self.port} in {took:.1f} s (start #{self.starts})")
        return took


class Services:
    """`prefect server services start`: the event persister, task-run recorder, triggers,
    scheduler, late runs and the rest, in one process."""

    def __init__(self, cluster: "PrefectCluster", name: str = "services") -> None:
        self.cluster = cluster
        self.name = name
        self.home = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cluster.root))
        self.log_path = self.home / "services.log"
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def env(self) -> dict[str, str]:
        env = clean_env()
        env.update(
            PREFECT_HOME=str(self.home),
            # Nothing in the services process needs it, but nothing may reach a user's server.
            PREFECT_API_URL=self.cluster.replicas[0].api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
        )
        env.update(self.cluster.prefect_env())
        return env

    def consuming(self) -> bool:
        """Prefect's consumer groups on `events` exist, each with a consumer reading."""
        import redis

        try:
            with self.cluster.redis.client() as c:
                groups = {g["name"]: g for g in c.xinfo_groups(EVENTS_STREAM)}
        except (redis.RedisError, OSError):
            return False
        return all(name in groups and groups[name]["consumers"] >= 1 for name in EVENT_GROUPS)

    def start(self, timeout: float = 120) -> float:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} already running"
        self.starts += 1
        t0 = time.monotonic()
        with open(self.log_path, "ab") as logf:
            logf.write(f"\n==== start #{self.starts} ====\n".encode())
            logf.flush()
            self.proc = popen([PYTHON, "-m", "prefect", "server", "services", "start"], env=self.env(),
                              stdout=logf, stderr=subprocess.STDOUT, cwd=self.home)
        _wait(self.consuming, self.proc, timeout, f"{self.name} (consumer groups {EVENT_GROUPS} on `events`)",
              self.log_path, 0.25)
        took = time.monotonic() - t0
        log(f"{self.name} consuming `events` in {took:.1f} s")
        return took

    def stop(self, timeout: float = 30) -> None:
        if self.proc is not None and self.proc.poll() is None:
            stop_process(self.proc, timeout=timeout)

    def describe(self) -> tuple[str, str]:
        return (f"prefect {self.name} log (tail)", tail(self.log_path, 60))


class PrefectCluster:
    """PostgreSQL + Redis + N API replicas + one services process, on loopback.

    `replicas[i].api_url` are the replicas' API URLs; `replicas[i].client_env()` is the
    environment for flows talking to that replica; `redis` (host, port, url(), client()) and
    `postgres` are the shared stores; `timings` holds each start step's seconds. `extra_env`
    goes to every Prefect server process (replicas and services), e.g. a shorter
    PREFECT_REDIS_MESSAGING_CONSUMER_TRIM_IDLE_THRESHOLD."""

    def __init__(self, root: Path, name: str = "topology", replicas: int = 2,
                 extra_env: Optional[dict[str, str]] = None, redis_persistent: bool = False) -> None:
        assert replicas >= 1
        self.name = name
        self.root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=root))
        self.extra_env = dict(extra_env or {})
        self.postgres = Postgres(self.root)
        self.redis = Redis(self.root, persistent=redis_persistent)
        self.replicas = [ApiReplica(self, f"{name}-api{i + 1}") for i in range(replicas)]
        self.services = Services(self)
        self.timings: dict[str, float] = {}

    def prefect_env(self) -> dict[str, str]:
        """Settings shared by every Prefect server process of the cluster (holds the DB URL)."""
        env = {
            "PREFECT_API_DATABASE_CONNECTION_URL": self.postgres.url,
            # Migrations are run once, before any replica starts (as Prefect's HA guide says).
            "PREFECT_API_DATABASE_MIGRATE_ON_START": "false",
            "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
            "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
            "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
            "PREFECT_REDIS_MESSAGING_HOST": self.redis.host,
            "PREFECT_REDIS_MESSAGING_PORT": str(self.redis.port),
            "PREFECT_REDIS_MESSAGING_DB": "0",
            # Background-work coordination on Redis too (memory:// is for a single server).
            "PREFECT_SERVER_DOCKET_URL": self.redis.url(1),
        }
        env.update(self.extra_env)
        return env

    def _upgrade(self, timeout: float = 180) -> float:
        t0 = time.monotonic()
        home = Path(tempfile.mkdtemp(prefix="upgrade-", dir=self.root))
        env = clean_env()
        env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
        env.update(self.prefect_env())
        with open(home / "upgrade.log", "wb") as out:
            proc = popen([PYTHON, "-m", "prefect", "server", "database", "upgrade", "-y"], env=env,
                         stdout=out, stderr=subprocess.STDOUT, cwd=home)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                stop_process(proc)
                raise AssertionError(f"database upgrade still running after {timeout} s\n{tail(home / 'upgrade.log')}")
        if rc != 0:
            raise AssertionError(f"prefect server database upgrade -y exited {rc}\n{tail(home / 'upgrade.log')}")
        took = time.monotonic() - t0
        log(f"{self.name}: PostgreSQL migrated in {took:.1f} s")
        return took

    def start(self) -> dict[str, float]:
        t0 = time.monotonic()
        self.timings["postgres"] = self.postgres.start()
        self.timings["redis"] = self.redis.start()
        self.timings["upgrade"] = self._upgrade()
        # One after the other: two replicas starting together race on block registration and
        # one exits (UniqueViolation on block types).
        for replica in self.replicas:
            self.timings[replica.name] = replica.start()
        self.timings["services"] = self.services.start()
        self.timings["total"] = time.monotonic() - t0
        log(f"{self.name}: cluster up in {self.timings['total']:.1f} s "
            f"({', '.join(f'{k} {v:.1f} s' for k, v in self.timings.items() if k != 'total')})")
        return self.timings

    def stop(self) -> None:
        """Services, replicas, then the stores; each by its own process id."""
        self.services.stop()
        for replica in reversed(self.replicas):
            replica.stop()
        self.redis.stop()
        self.postgres.stop()

    def parts(self) -> list:
        """Everything whose log is worth attaching to a failed test's report."""
        return [*self.replicas, self.services, self.redis, self.postgres]


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


@contextlib.contextmanager
def running_cluster(root: Path, **options: Any) -> Iterator[PrefectCluster]:
    """A started cluster, stopped on exit whatever happened (for module-scoped fixtures)."""
    cluster = PrefectCluster(root, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
