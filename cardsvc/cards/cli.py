"""``cardsvc cards``: the card jobs, and the card lifecycle at the counter (DESIGN §8).

The lifecycle commands mirror ``cardsvc/cards/endpoints.py``: the same roles, the same service
calls, one commit each.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import click
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.applications import service as applications
from cardsvc.cards import service, tasks
from cardsvc.cards.endpoints import COUNTER_ROLES, READER_ROLES, SUPERVISOR_ROLES
from cardsvc.cards.models import Card
from cardsvc.cards.numbers import check_card_no
from cardsvc.cards.schemas import CancelBody, CashPayoutBody
from cardsvc.clitools import run_async
from cardsvc.errors import ValidationFailed
from cardsvc.jobs import worker
from cardsvc.resources import Resources
from cardsvc.settings import get_settings
from cardsvc.staff.auth import Role, StaffPrincipal
from cardsvc.staff.cli import fail, parse_input, run_as_staff, staff_options


@click.group()
def cards() -> None:
    """Card jobs and the card lifecycle at the counter."""


@cards.command("release-balances")
def release_balances() -> None:
    """Move balances of replaced/cancelled cards whose waiting period is over (idempotent)."""
    click.echo(run_async(lambda: worker.run_by_hand(get_settings(), tasks.RELEASE_BALANCES)))


@cards.command("expire-due")
def expire_due() -> None:
    """Expire active cards past their expiry date."""
    click.echo(run_async(lambda: worker.run_by_hand(get_settings(), tasks.EXPIRE_CARDS)))


@dataclass(frozen=True)
class _Outcome:
    card_no: str
    status: str
    blacklist_version: int | None = None
    replacement_application_id: int | None = None


# A lifecycle step: (session, settings-bearing resources, locked card, actor) → outcome details.
_Step = Callable[[AsyncSession, Resources, Card, str], Awaitable[_Outcome]]


def _checked(card_no: str) -> str:
    try:
        return check_card_no(card_no)
    except ValidationFailed as exc:
        fail(exc)


def _lifecycle(card_no: str, user: str, password: str, roles: Iterable[Role], step: _Step) -> None:
    number = _checked(card_no)

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> _Outcome:
        card = await service.require_card(session, number)
        return await step(session, resources, card, principal.username)

    outcome = run_as_staff(user, password, roles, work)
    line = f"card {outcome.card_no} {outcome.status}"
    if outcome.blacklist_version is not None:
        line += f"; blacklist version {outcome.blacklist_version}"
    if outcome.replacement_application_id is not None:
        line += (
            f"; replacement application {outcome.replacement_application_id} submitted, "
            "waiting for a supervisor"
        )
    click.echo(line)


def _listed(card: Card, version: int) -> _Outcome:
    return _Outcome(card.card_no, card.status.value, blacklist_version=version)


@cards.command("show")
@click.argument("card_no")
@staff_options
def show(card_no: str, user: str, password: str) -> None:
    """A card (counter operator, supervisor, auditor, finance)."""
    number = _checked(card_no)

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> tuple[Card, service.CardBalances]:
        card = await service.require_card(session, number, for_update=False)
        return card, await service.balances(session, card)

    card, held = run_as_staff(user, password, READER_ROLES, work)
    click.echo(
        f"card {card.card_no} (ASN {card.asn}): {card.status.value}, {card.card_type.value}, "
        f"resident {card.resident_id}, chip {card.chip_serial or '-'}, key version {card.key_version}, "
        f"issued {card.issued_at.date() if card.issued_at else '-'}, valid until {card.expires_on or '-'}"
        + (f", replaced by card id {card.replaced_by_id}" if card.replaced_by_id else "")
        + f"; balance {held.float_balance} fen"
        + (f", {held.to_load} fen to load onto the chip" if held.to_load else "")
        + (f", {held.cash_owed} fen cash refund to pay out" if held.cash_owed else "")
    )


@cards.command("payout")
@click.argument("card_no")
@click.option("--counter-code", required=True, help="The counter whose drawer pays the cash.")
@staff_options
def payout(card_no: str, counter_code: str, user: str, password: str) -> None:
    """Pay a cancelled card's cash refund to its holder (counter operator, supervisor).

    Due after the waiting period; owed until paid, whatever the drawer held meanwhile. Asking
    again shows the same payout; a drawer that holds less than the refund refuses it.
    """
    number = _checked(card_no)
    body = parse_input(CashPayoutBody, counter_code=counter_code)

    async def work(
        resources: Resources, session: AsyncSession, principal: StaffPrincipal
    ) -> service.CashPayout:
        card = await service.require_card(session, number)
        return await service.pay_out_cash_refund(
            session, resources.settings, card, counter_code=body.counter_code,
            actor=principal.username,
        )  # fmt: skip

    paid = run_as_staff(user, password, COUNTER_ROLES, work)
    again = " (paid before: nothing moved now)" if paid.replayed else ""
    click.echo(
        f"card {paid.card_no}: {paid.amount} fen paid out at counter {paid.counter_code}{again}"
    )


@cards.command("loss")
@click.argument("card_no")
@staff_options
def loss(card_no: str, user: str, password: str) -> None:
    """Report loss (挂失): blacklisted at once (counter operator, supervisor)."""

    async def step(session: AsyncSession, resources: Resources, card: Card, actor: str) -> _Outcome:
        return _listed(card, await service.report_loss(session, card, actor=actor))

    _lifecycle(card_no, user, password, COUNTER_ROLES, step)


@cards.command("recover")
@click.argument("card_no")
@staff_options
def recover(card_no: str, user: str, password: str) -> None:
    """A lost card was found (解挂): active again (counter operator, supervisor)."""

    async def step(session: AsyncSession, resources: Resources, card: Card, actor: str) -> _Outcome:
        return _listed(card, await service.recover(session, card, actor=actor))

    _lifecycle(card_no, user, password, COUNTER_ROLES, step)


@cards.command("freeze")
@click.argument("card_no")
@staff_options
def freeze(card_no: str, user: str, password: str) -> None:
    """Freeze: blacklisted at once (supervisor, administrator)."""

    async def step(session: AsyncSession, resources: Resources, card: Card, actor: str) -> _Outcome:
        return _listed(card, await service.freeze(session, card, actor=actor))

    _lifecycle(card_no, user, password, SUPERVISOR_ROLES, step)


@cards.command("unfreeze")
@click.argument("card_no")
@staff_options
def unfreeze(card_no: str, user: str, password: str) -> None:
    """Unfreeze (supervisor, administrator)."""

    async def step(session: AsyncSession, resources: Resources, card: Card, actor: str) -> _Outcome:
        return _listed(card, await service.unfreeze(session, card, actor=actor))

    _lifecycle(card_no, user, password, SUPERVISOR_ROLES, step)


@cards.command("replace")
@click.argument("card_no")
@staff_options
def replace(card_no: str, user: str, password: str) -> None:
    """Replace a lost card (补卡); submits the replacement application (counter operator, supervisor)."""

    async def step(session: AsyncSession, resources: Resources, card: Card, actor: str) -> _Outcome:
        application = await applications.replace_card(
            session, resources.settings, card, actor=actor
        )
        return _Outcome(card.card_no, card.status.value, replacement_application_id=application.id)

    _lifecycle(card_no, user, password, COUNTER_ROLES, step)


@cards.command("cancel")
@click.argument("card_no")
@click.option(
    "--refund-to",
    type=click.Choice(list(service.REFUND_TARGETS)),
    default="resident_account",
    show_default=True,
    help="Where the balance goes after the waiting period.",
)
@click.option(
    "--counter-code",
    default=None,
    help="With counter_cash: the counter the holder collects the cash at (cards payout).",
)
@staff_options
def cancel(
    card_no: str, refund_to: str, counter_code: str | None, user: str, password: str
) -> None:
    """Cancel (销户): blacklisted at once; balance refunded later (counter operator, supervisor)."""
    body = parse_input(CancelBody, refund_to=refund_to, counter_code=counter_code)

    async def step(session: AsyncSession, resources: Resources, card: Card, actor: str) -> _Outcome:
        version = await service.cancel(
            session,
            resources.settings,
            card,
            refund_to=body.refund_to,
            refund_ref=body.counter_code,
            actor=actor,
        )
        return _listed(card, version)

    _lifecycle(card_no, user, password, COUNTER_ROLES, step)


@cards.command("expire")
@click.argument("card_no")
@staff_options
def expire(card_no: str, user: str, password: str) -> None:
    """Expire one card now (supervisor, administrator)."""

    async def step(session: AsyncSession, resources: Resources, card: Card, actor: str) -> _Outcome:
        await service.expire(session, card, actor=actor)
        return _Outcome(card.card_no, card.status.value)

    _lifecycle(card_no, user, password, SUPERVISOR_ROLES, step)
