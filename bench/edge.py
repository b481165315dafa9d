"""The edge at real sizes: what oversized bodies cost the API, and what a connection flood costs
hsm-sim (the tests use small sizes; this proves the issue's ones).

API (uvicorn on loopback, SQLite, an hsm-sim child process, development mode):

- an 11 MiB unauthenticated sign-in of small JSON objects, with and without ``Content-Length``:
  the answer, the time to it, and the API process's peak memory (VmHWM) before and after;
- a 200 MiB body to the staff login and to sign-in, with and without ``Content-Length``: the time
  to the 413, and how many bytes the client had sent when it came.

hsm-sim (production mode, its own process): 20,000 idle connections from 127.0.0.2 while an
authenticated client pings every 10 ms: how many the server held, its descriptors and memory,
the pings' p50/p99/max and failures, and how long until the flood was cut off; then a 16 MiB
frame before authentication.

    uv run python bench/edge.py [--idle 20000] [--body-mib 200]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import resource
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from _common import running_api

from cardsvc import migrate
from cardsvc.hsm.connect import connect_hsm
from hsm_sim.child import start_hsm_process

MIB = 1024 * 1024


def vm(pid: int, field: str) -> int:
    """VmRSS or VmHWM of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def children(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        for child in text:
            found.extend(children(int(child)))
    return found


def peak_kib(pid: int) -> int:
    return max(vm(p, "VmHWM") for p in children(pid))


def send_body(
    port: int, path: str, size: int, *, declared: bool, headers: str = ""
) -> tuple[str, float, int]:
    """Send ``size`` bytes of small JSON objects to ``path``; (status line, seconds to it, bytes
    the client had sent when the answer came)."""
    chunk = b"{}," * (64 * 1024 // 3)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n{headers}"
    head += f"Content-Length: {size}\r\n" if declared else "Transfer-Encoding: chunked\r\n"
    started = time.perf_counter()
    sock.setblocking(True)
    sock.sendall((head + "\r\n").encode())
    sock.setblocking(False)
    sent = 0
    answer = b""
    while sent < size:
        piece = chunk[: size - sent]
        frame = piece if declared else f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        try:
            n = sock.send(frame)
        except BlockingIOError:
            n = 0
        except OSError:
            break  # the server closed the connection
        if n and declared:
            sent += n
        elif n == len(frame):
            sent += len(piece)
        try:
            data = sock.recv(65536)
            if data:
                answer += data
                break
            break
        except BlockingIOError:
            if n == 0:
                time.sleep(0.001)
    sock.setblocking(True)
    sock.settimeout(10)
    try:
        while b"\r\n" not in answer:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    except OSError:
        pass
    elapsed = time.perf_counter() - started
    sock.close()
    return answer.split(b"\r\n", 1)[0].decode(errors="replace"), elapsed, sent


@contextmanager
def api() -> Iterator[tuple[int, int]]:
    work = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    url = f"sqlite+aiosqlite:///{work}/cardsvc.db"
    migrate.upgrade(url)
    env = {
        **os.environ,
        "CARDSVC_MODE": "development",
        "CARDSVC_VAR_DIR": str(work),
        "CARDSVC_DATABASE_URL": url,
        "CARDSVC_LOG_LEVEL": "WARNING",
    }
    with running_api(env, workers=1) as (pid, base):
        yield pid, int(urlsplit(base).port or 0)


def api_bench(body_mib: int) -> None:
    print("API: oversized bodies (one uvicorn worker)")
    with api() as (pid, port):
        print(f"  peak memory after start: {peak_kib(pid) / 1024:.0f} MiB")
        for path, size, declared in (
            ("/api/v1/terminal/sign-in", 11 * MIB, True),
            ("/api/v1/terminal/sign-in", 11 * MIB, False),
            ("/api/v1/staff/login", body_mib * MIB, True),
            ("/api/v1/staff/login", body_mib * MIB, False),
            ("/api/v1/terminal/uploads", body_mib * MIB, True),
        ):
            status, seconds, sent = send_body(
                port, path, size, declared=declared, headers="X-Terminal-No: 321100000001\r\n"
            )
            how = "with Content-Length" if declared else "chunked"
            print(
                f"  {size // MIB} MiB to {path} {how}: {status!r} after {seconds * 1000:.1f} ms, "
                f"{sent / 1024:,.0f} KiB sent; API peak memory {peak_kib(pid) / 1024:.0f} MiB"
            )


async def hsm_bench(idle: int) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    idle = min(idle, hard - 256)
    work = Path(tempfile.mkdtemp(prefix="bench-edge-hsm-"))
    secret = secrets.token_urlsafe(24)
    env = {
        "HSM_SIM_MODE": "production",
        "HSM_SIM_LMK_COMPONENTS": ",".join(secrets.token_hex(32) for _ in range(2)),
        "HSM_SIM_CLIENT_SECRET": secret,
        "HSM_SIM_GROUP_FACTOR": "3211FF0000000000",
        "HSM_SIM_KEYSTORE": str(work / "keystore.json"),
        "HSM_SIM_WORKERS": "0",
    }
    url, stop = await asyncio.to_thread(start_hsm_process, work, dev_keys=False, env=env)
    parts = urlsplit(url)
    host, port = str(parts.hostname), int(parts.port or 0)
    server_pid = _hsm_pid(work)
    print(f"hsm-sim: {idle:,} idle connections from 127.0.0.2 (descriptor limit {hard:,})")
    client = await connect_hsm(url, secret=secret, pool_size=1)
    before_rss = vm(server_pid, "VmRSS")
    latencies: list[float] = []
    failures = 0
    stop_pinging = asyncio.Event()

    async def pinger() -> None:
        nonlocal failures
        while not stop_pinging.is_set():
            started = time.perf_counter()
            try:
                await client.ping()
                latencies.append(time.perf_counter() - started)
            except Exception:
                failures += 1
            await asyncio.sleep(0.01)

    ping_task = asyncio.create_task(pinger())
    # The flood comes from a process of its own, so that its work never delays the pings.
    ready = multiprocessing.Event()
    flooder = multiprocessing.Process(target=_flood, args=(host, port, idle, ready, 20.0))
    started = time.perf_counter()
    flooder.start()
    most_descriptors, most_rss = 0, 0
    opened_after = None
    while flooder.is_alive():
        await asyncio.sleep(0.2)
        most_descriptors = max(most_descriptors, len(os.listdir(f"/proc/{server_pid}/fd")))
        most_rss = max(most_rss, vm(server_pid, "VmRSS"))
        if opened_after is None and ready.is_set():
            opened_after = time.perf_counter() - started
    stop_pinging.set()
    await ping_task
    ordered = sorted(latencies)
    p99 = ordered[int(0.99 * (len(ordered) - 1))] if ordered else float("nan")
    print(
        f"  the flood opened its {idle:,} connections in {opened_after or float('nan'):.1f} s "
        f"and held them 20 s; server at most {most_descriptors} descriptors, RSS "
        f"{before_rss / 1024:.0f} -> at most {most_rss / 1024:.0f} MiB"
    )
    print(
        f"  authenticated pings meanwhile: {len(latencies)} ok, {failures} failed; "
        f"p50 {statistics.median(ordered) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {ordered[-1] * 1000:.2f} ms"
    )
    # A 16 MiB frame before authentication: refused before its body is read.
    reader, writer = await asyncio.open_connection(host, port)
    rss = vm(server_pid, "VmRSS")
    started = time.perf_counter()
    writer.write((16 * MIB).to_bytes(4, "big") + b"{" * (64 * 1024))
    answer = await asyncio.wait_for(reader.read(4096), 5)
    print(
        f"  16 MiB frame before authentication: {answer[4:80]!r} after "
        f"{(time.perf_counter() - started) * 1000:.1f} ms; server RSS {rss / 1024:.0f} -> "
        f"{vm(server_pid, 'VmRSS') / 1024:.0f} MiB"
    )
    writer.close()
    await client.close()
    await asyncio.to_thread(stop)


def _flood(host: str, port: int, count: int, ready: Any, hold: float) -> None:
    """Open ``count`` idle connections from 127.0.0.2 and keep them for ``hold`` seconds."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind(("127.0.0.2", 0))
        with contextlib.suppress(BlockingIOError, OSError):
            sock.connect((host, port))
        sockets.append(sock)
    ready.set()
    time.sleep(hold)
    for sock in sockets:
        sock.close()


def _hsm_pid(work: Path) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if b"hsm_sim" in cmdline and b"serve" in cmdline and str(work).encode() in environ:
            return int(entry.name)
    raise RuntimeError("hsm-sim process not found")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=20_000)
    parser.add_argument("--body-mib", type=int, default=200)
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"machine load average at start: {load[0]:.2f} (2 cores); python {sys.version.split()[0]}"
    )
    api_bench(args.body_mib)
    asyncio.run(hsm_bench(args.idle))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
