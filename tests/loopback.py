"""One HTTP client for the tests' calls to the processes they start on this machine (``cardsvc
serve``, biller-sim, the worker's metrics), instead of ``httpx.get`` and ``httpx.post``, which
make a client per call: each client loads the system's trust store, tens of milliseconds of CPU,
and a readiness poll or a simulator's control route calls many times a test."""

from __future__ import annotations

import functools

import httpx


@functools.cache
def local() -> httpx.Client:
    """This process's client (plain HTTP to 127.0.0.1; a timeout of five seconds, as
    ``httpx.get``)."""
    return httpx.Client(timeout=5.0)
