"""``biller-sim serve``: the simulated biller as its own process (docs/biller-protocol.md §10)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import click

from terminals.devices.billersim.biller import BillerSim
from terminals.devices.billersim.http import Server

MAX_BODY = 32 * 1024 * 1024


async def serve_forever(
    data: dict[str, object], host: str, port: int, ready_file: Path | None, max_skew: float
) -> None:
    sim = BillerSim(data, max_skew=max_skew)
    server = await asyncio.start_server(
        Server(sim.handle, max_body=MAX_BODY).connection, host, port, limit=MAX_BODY + 1024
    )
    bound = server.sockets[0].getsockname()
    if ready_file is not None:
        temporary = ready_file.with_suffix(".tmp")
        temporary.write_text(f"{bound[0]} {bound[1]}")
        os.replace(temporary, ready_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()
    await sim.close()


@click.group()
def main() -> None:
    """The simulated biller of docs/biller-protocol.md (test and demo equipment)."""


@main.command()
@click.option(
    "--data",
    "data_file",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    help="JSON: channel, callback_url, billers with keys, accounts and bills",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0: a free port")
@click.option(
    "--ready-file",
    type=click.Path(path_type=Path),
    default=None,
    help="write 'host port' here once listening",
)
@click.option(
    "--max-skew",
    default=300.0,
    show_default=True,
    help="seconds a request's timestamp may differ from this clock",
)
def serve(data_file: Path, host: str, port: int, ready_file: Path | None, max_skew: float) -> None:
    """Answer the protocol's requests until SIGTERM."""
    data = json.loads(data_file.read_text(encoding="utf-8"))
    asyncio.run(serve_forever(data, host, port, ready_file, max_skew))


if __name__ == "__main__":
    main()
