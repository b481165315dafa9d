"""Run ``hsm-sim serve`` as a child process with the development key set on a free port.

For development (``cardsvc`` with ``CARDSVC_HSM_URL=spawn``, the demo), tests and benchmarks::

    url, stop = start_hsm_process(tmp_path)          # synchronous
    ...
    stop()

    async with hsm_process(tmp_path) as url:         # asynchronous
        client = await connect_hsm(url)

The child listens on port 0 (the kernel picks a free port, no race) and reports the port in a
ready file; we then wait until it answers PING.

One simulator per directory (:mod:`hsm_sim.lock`): when one already runs on the directory's key
store and audit log (``cardsvc serve`` beside a command, several API workers), it is used instead
of starting a second one, and ``stop`` leaves it running; one that holds the files but does not
answer is refused (:class:`HsmBusy`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from hsm_sim.lock import STATE_BUSY_EXIT, Holder, holder
from hsm_sim.protocol import HEADER, encode_frame


class HsmBusy(RuntimeError):
    """Another hsm-sim holds the directory's files and does not answer."""


def _ping(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(encode_frame({"id": 1, "cmd": "PING"}))
            sock.settimeout(timeout)
            data = b""
            while len(data) < HEADER.size:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
            return b'"ok":true' in data or len(data) > HEADER.size
    except OSError:
        return False


def start_hsm_process(
    tmpdir: str | os.PathLike[str],
    *,
    dev_keys: bool = True,
    env: Mapping[str, str] | None = None,
    host: str = "127.0.0.1",
    startup_timeout: float = 20.0,
    answer_timeout: float = 3.0,
) -> tuple[str, Callable[[], None]]:
    """Start ``hsm-sim serve`` (development mode unless ``env`` says otherwise), or use the one
    already running on the same files; return (url, stop).

    Key store and audit log go under ``tmpdir`` unless ``env`` names them; stderr goes to
    ``tmpdir/hsm-sim.log``.
    """
    directory = Path(tmpdir)
    directory.mkdir(parents=True, exist_ok=True)
    audit_log = Path((env or {}).get("HSM_SIM_AUDIT_LOG") or directory / "audit.log")
    for _attempt in range(3):
        running = _running(audit_log, startup_timeout, answer_timeout)
        if running is not None:
            return running, lambda: None
        try:
            return _spawn(directory, dev_keys, env, host, startup_timeout)
        except _LostTheRace:
            continue  # another started on these files at the same moment: use that one
    raise HsmBusy(f"{audit_log} changes hands too often to start hsm-sim on it")


class _LostTheRace(Exception):
    pass


def _running(audit_log: Path, startup_timeout: float, answer_timeout: float) -> str | None:
    """The url of the hsm-sim holding these files, once it answers; None when none holds them.
    One still starting has ``startup_timeout`` to publish its address, then ``answer_timeout``
    to answer PING there."""
    started = time.monotonic()
    deadline = started + startup_timeout
    found: Holder | None = holder(audit_log)
    while found is not None:
        if found.url is not None and found.host is not None and found.port is not None:
            if _ping(found.host, found.port, 1.0):
                return found.url
            deadline = min(deadline, started + answer_timeout)
        if time.monotonic() > deadline:
            who = f"hsm-sim process {found.pid}" if found.pid else "another process"
            raise HsmBusy(
                f"{audit_log.parent} is held by {who}, which does not answer: "
                "stop it, or use another directory"
            )
        time.sleep(0.05)  # still starting: it publishes its address once it listens
        found = holder(audit_log)
    return None


def _spawn(
    directory: Path,
    dev_keys: bool,
    env: Mapping[str, str] | None,
    host: str,
    startup_timeout: float,
) -> tuple[str, Callable[[], None]]:
    ready = directory / f"hsm-sim-ready-{os.getpid()}-{time.monotonic_ns()}"
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("HSM_SIM_")}
    child_env.update(
        {
            "HSM_SIM_MODE": "development",
            "HSM_SIM_KEYSTORE": str(directory / "keystore.json"),
            "HSM_SIM_AUDIT_LOG": str(directory / "audit.log"),
        }
    )
    child_env.update(env or {})
    command = [
        sys.executable,
        "-m",
        "hsm_sim",
        "serve",
        "--host",
        host,
        "--port",
        "0",
        "--ready-file",
        str(ready),
    ]
    if dev_keys:
        command.append("--dev-keys")
    log_file = (directory / "hsm-sim.log").open("ab")
    process = subprocess.Popen(command, env=child_env, stdout=log_file, stderr=subprocess.STDOUT)  # noqa: S603

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        log_file.close()
        ready.unlink(missing_ok=True)

    deadline = time.monotonic() + startup_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stop()
            if process.returncode == STATE_BUSY_EXIT:
                raise _LostTheRace
            log = (directory / "hsm-sim.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"hsm-sim exited with {process.returncode}:\n{log}")
        if ready.exists():
            bound_host, bound_port = ready.read_text().split()
            if _ping(bound_host, int(bound_port), 2.0):
                return f"tcp://{bound_host}:{bound_port}", stop
        time.sleep(0.05)
    stop()
    raise RuntimeError(f"hsm-sim did not answer PING within {startup_timeout} s")


@asynccontextmanager
async def hsm_process(
    tmpdir: str | os.PathLike[str], *, dev_keys: bool = True, env: Mapping[str, str] | None = None
) -> AsyncIterator[str]:
    """Async form of :func:`start_hsm_process`; yields the ``tcp://`` url."""
    url, stop = await asyncio.to_thread(start_hsm_process, tmpdir, dev_keys=dev_keys, env=env)
    try:
        yield url
    finally:
        await asyncio.to_thread(stop)
