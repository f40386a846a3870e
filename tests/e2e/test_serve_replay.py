"""Prefect's own Python events client against `serve-replay`.

The subscriber from the pinned prefect==3.9.1 (`get_events_subscriber`) must not be able to
tell serve-replay from a real server: it receives every distinct event of the recording,
authenticates with `PREFECT_API_AUTH_STRING`, and fails with the real server's close code
and reason when the auth string is wrong.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAIN = ROOT / "replay-data" / "prefect-3.9.1-main.jsonl"

# Runs in a subprocess so that Prefect reads the environment the test sets.
SUBSCRIBER = r"""
import asyncio, json, sys
from prefect.events.clients import get_events_subscriber

async def main(expected, seconds):
    ids = set()
    async def consume():
        async with get_events_subscriber(reconnection_attempts=0) as subscriber:
            async for event in subscriber:
                ids.add(str(event.id))
                if len(ids) >= expected:
                    return
    try:
        await asyncio.wait_for(consume(), seconds)
    except asyncio.TimeoutError:
        pass
    print(json.dumps({"distinct": len(ids)}))

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


def binary():
    path = os.environ.get("PREFECT_EXPORTER_BIN")
    if not path:
        pytest.fail("set PREFECT_EXPORTER_BIN to the built prefect-events-exporter binary")
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def distinct_event_ids(path):
    ids = set()
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            frame = json.loads(line)
            if frame.get("type") == "event":
                ids.add(frame["event"]["id"])
    return ids


class ServeReplay:
    def __init__(self, *args):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [binary(), "serve-replay", str(MAIN), "--listen", f"127.0.0.1:{self.port}", "--rate", "max", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        else:
            self.stop()
            pytest.fail("serve-replay did not start")
        # Let the whole recording be released (--rate max: at once).
        time.sleep(2)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def serve_replay():
    servers = []

    def start(*args):
        server = ServeReplay(*args)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def subscribe(api_url, expected, seconds, auth_string=None, version_check=True):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if not version_check:
        env["PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED"] = "false"
    env["PREFECT_API_URL"] = api_url
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    if auth_string is not None:
        env["PREFECT_API_AUTH_STRING"] = auth_string
    # The client's own home (settings, caches), removed with everything in it afterwards.
    with tempfile.TemporaryDirectory(prefix="prefect-home-") as home:
        env["PREFECT_HOME"] = home
        return subprocess.run(
            [sys.executable, "-c", SUBSCRIBER, str(expected), str(seconds)],
            env=env,
            capture_output=True,
            text=True,
            timeout=seconds + 60,
        )


def test_prefect_subscriber_receives_every_distinct_event(serve_replay):
    expected = len(distinct_event_ids(MAIN))
    assert expected == 4282  # the recording's README: every event in the server's database
    server = serve_replay()
    result = subscribe(server.api_url, expected, 60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"distinct": expected}


def test_prefect_subscriber_authenticates_with_the_auth_string(serve_replay):
    server = serve_replay("--auth-string", "admin:pass")
    result = subscribe(server.api_url, 4282, 60, auth_string="admin:pass")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"distinct": 4282}


def test_prefect_subscriber_with_a_wrong_auth_string_is_refused_like_by_the_real_server(serve_replay):
    # Like the real server, REST answers 401, so the client's version check stops it first.
    server = serve_replay("--auth-string", "admin:pass")
    result = subscribe(server.api_url, 1, 20, auth_string="admin:wrong")
    assert result.returncode != 0
    assert "401 Unauthorized" in result.stderr
    assert "/api/admin/version" in result.stderr


def test_websocket_refusal_has_the_real_servers_close_reason(serve_replay):
    # Without the version check, the websocket itself refuses: close 1008 "Invalid token",
    # which Prefect's client reports with the server's reason.
    server = serve_replay("--auth-string", "admin:pass")
    result = subscribe(server.api_url, 1, 20, auth_string="admin:wrong", version_check=False)
    assert result.returncode != 0
    assert "Unable to authenticate to the event stream" in result.stderr
    assert "Reason: Invalid token" in result.stderr
