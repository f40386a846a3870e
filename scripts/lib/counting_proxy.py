"""A counting HTTP/1.1 reverse proxy for the benchmarks (scripts/bench-api-cost.py).

One upstream (a Prefect API replica on loopback), one listening port per client name, so each
client's requests are told apart without touching them. Every request is counted by method,
endpoint (UUIDs folded to `{id}`, the query dropped) and status, with its bytes and the
response's bytes on the wire (head and body as sent: gzip when the server compressed it).
A websocket upgrade is passed through unchanged and its bytes are counted apart from REST.
It never changes a request or a response, and binds 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import collections
import re
import threading
from typing import Optional

HOST = "127.0.0.1"
HEAD_LIMIT = 64 * 1024
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class Tally:
    """Requests and bytes per (client, method endpoint, status); websocket bytes apart."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rest: dict[tuple[str, str, int], list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
        self.ws: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0])  # upgrades, down, up

    def request(self, client: str, endpoint: str, status: int, req_bytes: int, resp_bytes: int, gzip: bool) -> None:
        with self.lock:
            row = self.rest[(client, endpoint, status)]
            row[0] += 1
            row[1] += resp_bytes
            row[2] += req_bytes
            row[3] += int(gzip)

    def websocket(self, client: str, upgrades: int = 0, down: int = 0, up: int = 0) -> None:
        with self.lock:
            row = self.ws[client]
            row[0] += upgrades
            row[1] += down
            row[2] += up

    def snapshot(self) -> dict:
        with self.lock:
            return {"rest": {k: list(v) for k, v in self.rest.items()}, "ws": {k: list(v) for k, v in self.ws.items()}}


def endpoint_of(method: str, target: str) -> str:
    path = target.split("?", 1)[0]
    return f"{method} {UUID.sub('{id}', path)}"


def header(head: bytes, name: bytes) -> Optional[bytes]:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def relay_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes,
                     no_body: bool, request: bool = False) -> tuple[int, bool]:
    """Copies one message body (Content-Length, chunked, or a response's until EOF); returns
    (bytes, ended by EOF). A request without either has no body."""
    if no_body:
        return 0, False
    te = (header(head, b"transfer-encoding") or b"").lower()
    length = header(head, b"content-length")
    if request and length is None and b"chunked" not in te:
        return 0, False
    sent = 0
    if b"chunked" in te:
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            writer.write(line)
            sent += len(line)
            if size == 0:
                while True:  # trailers, then the empty line
                    trailer = await reader.readuntil(b"\r\n")
                    writer.write(trailer)
                    sent += len(trailer)
                    if trailer == b"\r\n":
                        break
                break
            data = await reader.readexactly(size + 2)
            writer.write(data)
            sent += len(data)
            await writer.drain()
        await writer.drain()
        return sent, False
    if length is not None:
        remaining = int(length)
        while remaining:
            data = await reader.read(min(remaining, 65536))
            if not data:
                raise asyncio.IncompleteReadError(b"", remaining)
            writer.write(data)
            sent += len(data)
            remaining -= len(data)
            await writer.drain()
        return sent, False
    while True:  # a response without a length: until the server closes
        data = await reader.read(65536)
        if not data:
            return sent, True
        writer.write(data)
        sent += len(data)
        await writer.drain()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            count(len(data))
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - closing a broken socket
            pass


class CountingProxy:
    """An HTTP/1.1 reverse proxy in its own thread and event loop, one port per client name.

    Each request is sent to the upstream on a fresh connection (so no stale keep-alive
    connection of the upstream ever meets a client's request); the client's own connection
    stays open across requests as it asks. After a `101 Switching Protocols` both directions
    are piped unchanged and counted as websocket bytes."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.tally = Tally()
        self.errors: list[str] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.servers: list[asyncio.base_events.Server] = []

    def listen(self, client: str) -> int:
        async def start() -> int:
            server = await asyncio.start_server(lambda r, w: self._serve(client, r, w), HOST, 0,
                                                limit=HEAD_LIMIT)
            self.servers.append(server)
            return server.sockets[0].getsockname()[1]

        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    async def _serve(self, client: str, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await creader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                if not await self._one(client, head, creader, cwriter):
                    return
        except Exception as exc:  # noqa: BLE001 - one connection's failure is recorded, not fatal
            self.errors.append(f"{client}: {exc!r}")
        finally:
            try:
                cwriter.close()
            except Exception:  # noqa: BLE001
                pass

    async def _one(self, client: str, head: bytes, creader, cwriter) -> bool:
        """Forwards one request and its response; False when the client connection must end."""
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        ureader, uwriter = await asyncio.open_connection(HOST, self.upstream_port, limit=HEAD_LIMIT)
        try:
            uwriter.write(head)
            req_bytes = len(head) + (await relay_body(creader, uwriter, head, False, request=True))[0]
            await uwriter.drain()
            rhead = await ureader.readuntil(b"\r\n\r\n")
            status = int(rhead.split(b" ", 2)[1])
            cwriter.write(rhead)
            endpoint = endpoint_of(method, target)
            if status == 101:
                await cwriter.drain()
                # A websocket, not a REST call: counted apart, with the bytes it carries.
                self.tally.websocket(client, upgrades=1, down=len(rhead), up=req_bytes)
                await asyncio.gather(
                    pipe(ureader, cwriter, lambda n: self.tally.websocket(client, down=n)),
                    pipe(creader, uwriter, lambda n: self.tally.websocket(client, up=n)),
                )
                return False
            no_body = method == "HEAD" or status in (204, 304) or 100 <= status < 200
            body, by_eof = await relay_body(ureader, cwriter, rhead, no_body)
            await cwriter.drain()
            gzip = (header(rhead, b"content-encoding") or b"").lower() == b"gzip"
            self.tally.request(client, endpoint, status, req_bytes, len(rhead) + body, gzip)
            closing = (header(head, b"connection") or b"").lower() == b"close" or \
                (header(rhead, b"connection") or b"").lower() == b"close"
            return not (by_eof or closing)
        finally:
            if not uwriter.is_closing():
                uwriter.close()

    def close(self) -> None:
        async def stop() -> None:
            for s in self.servers:
                s.close()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)


# ------------------------------------------------------------------ reading a tally


def per_client(tally: dict, client: str) -> dict:
    rows = {k: v for k, v in tally["rest"].items() if k[0] == client}
    by_endpoint: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    codes: dict[str, int] = collections.Counter()
    gz = 0
    for (_, endpoint, status), (n, resp, _req, g) in rows.items():
        by_endpoint[endpoint][0] += n
        by_endpoint[endpoint][1] += resp
        codes[str(status)] += n
        gz += g
    ws = tally["ws"].get(client, [0, 0, 0])
    return {
        "requests": sum(v[0] for v in by_endpoint.values()),
        "response_bytes": sum(v[1] for v in by_endpoint.values()),
        "gzip_responses": gz,
        "codes": dict(codes),
        "by_endpoint": {k: {"requests": v[0], "response_bytes": v[1]} for k, v in sorted(by_endpoint.items())},
        "websocket_upgrades": ws[0],
        "websocket_bytes_down": ws[1],
    }


def minus(a: dict, b: dict) -> dict:
    """Window figures: counts at the end minus counts at the start, per client."""
    out = {"requests": a["requests"] - b["requests"], "response_bytes": a["response_bytes"] - b["response_bytes"],
           "gzip_responses": a["gzip_responses"] - b["gzip_responses"],
           "websocket_bytes_down": a["websocket_bytes_down"] - b["websocket_bytes_down"],
           "codes": {k: v - b["codes"].get(k, 0) for k, v in a["codes"].items() if v - b["codes"].get(k, 0)}}
    eps = {}
    for k, v in a["by_endpoint"].items():
        before = b["by_endpoint"].get(k, {"requests": 0, "response_bytes": 0})
        n = v["requests"] - before["requests"]
        if n:
            eps[k] = {"requests": n, "response_bytes": v["response_bytes"] - before["response_bytes"]}
    out["by_endpoint"] = eps
    return out
