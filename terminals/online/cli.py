"""``cardsvc online``: release expired pre-authorization holds; list unresolved purse loads."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import click

from cardsvc import clock
from cardsvc.db import create_engine, session_factory
from cardsvc.jobs import worker
from cardsvc.settings import get_settings
from terminals.online import tasks


@click.group()
def online() -> None:
    """Online authorization and purse loads."""


@online.command("expire-holds")
@click.option(
    "--now",
    "now_text",
    default=None,
    help="Moment to expire at (ISO 8601, UTC when no zone); default now.",
)
def expire_holds_command(now_text: str | None) -> None:
    """Release the holds of pre-authorizations that were not completed in time."""
    if now_text is not None:
        parsed = datetime.fromisoformat(now_text)
        clock.set_time(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC))
    click.echo(asyncio.run(worker.run_by_hand(get_settings(), tasks.EXPIRE_HOLDS)))


async def _pending_loads(url: str) -> list[tuple[int, str, str, int, int, str]]:
    from terminals.loads import service as loads

    engine = create_engine(url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            rows = await loads.pending(session)
            return [
                (
                    r.id,
                    r.terminal_no,
                    r.card_no or r.asn,
                    r.online_counter,
                    r.amount,
                    r.created_at.isoformat(),
                )
                for r in rows
            ]
    finally:
        await engine.dispose()


@online.command("pending-loads")
def pending_loads_command() -> None:
    """List purse loads still waiting for card evidence (card numbers masked)."""
    rows = asyncio.run(_pending_loads(get_settings().database_url))
    if not rows:
        click.echo("no pending loads")
        return
    for load_id, terminal_no, card, counter, amount, created in rows:
        masked = f"{card[:4]}********{card[-4:]}"
        click.echo(
            f"load {load_id}  terminal {terminal_no}  card {masked}  counter {counter}  {amount} fen  {created}"
        )
