"""One hsm-sim per key store and audit log.

Two simulators writing one key store and one audit log would each chain the log from the head they
read at start, and the second one's entries would break the chain for good. So ``hsm-sim serve``
holds an exclusive lock on a ``.lock`` file beside each of them for as long as it runs (an
``flock``, which the kernel drops when the process ends, however it ends), and writes where it
listens into that file. A second one refuses to start, naming the first; a development client
that would start a simulator on the same files uses the running one instead
(:mod:`hsm_sim.child`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

# ``hsm-sim serve`` exits with this status when another process holds its files.
STATE_BUSY_EXIT: Final = 75


class StateBusy(Exception):
    """Another process holds the files."""

    def __init__(self, path: Path, holder: Holder | None) -> None:
        who = f"hsm-sim process {holder.pid}" if holder is not None else "another process"
        where = f", listening on {holder.host}:{holder.port}" if holder and holder.port else ""
        super().__init__(f"{path} is held by {who}{where}")
        self.path = path
        self.holder = holder


@dataclass(frozen=True, slots=True)
class Holder:
    pid: int
    host: str | None = None
    port: int | None = None

    @property
    def url(self) -> str | None:
        return f"tcp://{self.host}:{self.port}" if self.host and self.port else None


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _read(file: IO[str]) -> Holder | None:
    file.seek(0)
    try:
        data = json.loads(file.read() or "null")
        return Holder(int(data["pid"]), data.get("host"), data.get("port"))
    except (ValueError, TypeError, KeyError):
        return None


def holder(path: Path) -> Holder | None:
    """Who holds ``path`` (a key store or an audit log), or None when no one does."""
    target = lock_path(path)
    try:
        file = target.open("r", encoding="utf-8")
    except FileNotFoundError:
        return None
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(file) or Holder(0)
        fcntl.flock(file, fcntl.LOCK_UN)
        return None


def _lock_exclusive(file: IO[str], attempts: int = 20) -> bool:
    # A client asking :func:`holder` holds a shared lock for an instant: wait that out.
    for attempt in range(attempts):
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt + 1 < attempts:
                time.sleep(0.05)
    return False


class StateLock:
    """Exclusive locks on the given files for the life of this object (or of the process)."""

    def __init__(self, paths: list[Path]) -> None:
        self._files: list[IO[str]] = []
        try:
            for path in paths:
                target = lock_path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                file = target.open("a+", encoding="utf-8")
                if not _lock_exclusive(file):
                    found = _read(file)
                    file.close()
                    raise StateBusy(path, found)
                self._files.append(file)
                self._write(file, {"pid": os.getpid()})
        except BaseException:
            self.release()
            raise

    @staticmethod
    def _write(file: IO[str], data: dict[str, object]) -> None:
        file.seek(0)
        file.truncate()
        file.write(json.dumps(data))
        file.flush()

    def publish(self, host: str, port: int) -> None:
        """Where this simulator listens, for a client that would start another."""
        for file in self._files:
            self._write(file, {"pid": os.getpid(), "host": host, "port": port})

    def release(self) -> None:
        for file in self._files:
            with contextlib.suppress(OSError):
                file.close()
        self._files = []
