"""Purse loads (圈存) through the host (DESIGN §9, reference/pboc.md §4, §6.4).

Authorization: the terminal relays the card's INITIALIZE FOR LOAD answer. The card is checked
(known, active, not blacklisted, the load keeps the purse under its ceiling), the HSM verifies
MAC1 (which authenticates the card and its balance and online counter) and produces MAC2 over the
host date and time, and the money is taken from its source.

**When the ledger posts.** At authorization: the money has left its source (cash in the
counter's drawer, or the resident's online account), and from that moment it belongs to the card
float: source → ``card_float``, key ``load:<id>``. The load stays *pending* until it is proven on
the card; a load proven *not* to have reached the card is refunded by reversing that posting
(key ``load-refund:<id>``, linked to it), which puts the money back where it came from. Nothing
else ever posts for a load, so no path credits twice; and the database refuses two confirmed
loads of one card at one online counter, which is the card's own rule (one CREDIT per counter).

**Evidence** (a load at online counter c, i.e. the card's counter before it):

- the card's TAC from CREDIT FOR LOAD, verified by the HSM (``tac_verify`` kind ``load``) →
  confirmed;
- GET TRANSACTION PROVE type 02 with counter c + 1 on a later tap, its TAC verified against the
  load → confirmed;
- a later INITIALIZE FOR LOAD of the same card (its MAC1 verified, so the card state is genuine)
  showing an online counter above c, when this is the only unresolved load at c and the balance is
  consistent with it → confirmed (the card's counter passes c only by a credit at c, and every
  credit goes through the host);
- another load of the same card at counter c proven on the card → this one never was (the card
  credits once per counter) → refunded to its source.

A later INITIALIZE still at counter c does *not* by itself prove that the load failed: a slow
terminal could relay an INITIALIZE the card answered before this load. The new load then runs at
the same counter, and once *it* is proven, the old one is refunded.

**Two loads at one counter** of the same card, same amount, same terminal would have the same
TAC if their host date-times were equal (the TAC covers neither the random nor MAC2), and a proof
could then confirm the load whose MAC2 the card never saw. So the host never issues two MAC2 for
one card and online counter at the same host date-time: a later one takes the next free second
(the database refuses a duplicate).

**Reversal** (the terminal's ``/online/reversal`` naming the load's serial, one serial space):
a pending load is voided, its posting reversed to its source (key ``load-void:<id>``); a
confirmed load is refused 12 (the chip holds the money). Card evidence that later proves a
voided or refunded load opens a break (the books and the chip disagree) and confirms nothing.

**Ageing**: a load pending longer than ``load_evidence_break_after_seconds`` opens an
``aged_load`` break; it is never refunded without card evidence. The break closes itself when
evidence (or a reversal) resolves the load.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.accounts.service import PinCheck
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.breaks.schemas import BreakRef, NewBreak, Resolve
from cardsvc.clearing.service import clearing_date
from cardsvc.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    NotFound,
    ValidationFailed,
)
from cardsvc.hsm import HsmClient, HsmError, HsmMacInvalid, HsmUnavailable
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import InsufficientFunds
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.logging import get_logger
from cardsvc.settings import Settings
from terminals.access import service as access
from terminals.access.context import TerminalContext
from terminals.access.service import SignedRequest
from terminals.loads import repository as repo
from terminals.loads.models import LoadSource, LoadStatus, PurseLoad, Resolution
from terminals.loads.schemas import (
    ConfirmRequest,
    LoadRequest,
    LoadResponse,
    LoadState,
    ProveRequest,
    TransferWaiting,
)
from terminals.online import messages, pins
from terminals.online.messages import (
    MESSAGES,
    Claim,
    Declined,
    card_refusal,
    local_now,
    request_hash,
    resident_account,
)
from terminals.online.models import AuthStatus, MessageKind, OnlineAuthorization
from terminals.online.schemas import ResponseCode
from terminals.registry.models import TerminalKind

log = get_logger(__name__)

TX_TYPE_EP_LOAD = 0x02  # reference/pboc.md §4: TxType 02 = EP load
SYSTEM = "system:loads"


class TerminalMayNotLoad(Forbidden):
    """Only counters and kiosks load purses (TerminalKind); loads themselves are declined 58."""


@dataclass(frozen=True, slots=True)
class LoadOutcome:
    row: PurseLoad
    replayed: bool

    def response(self) -> LoadResponse:
        row = self.row
        approved = row.response_code == ResponseCode.approved
        return LoadResponse(
            load_id=row.id,
            terminal_serial=row.terminal_serial,
            response_code=row.response_code,
            approved=approved,
            message=MESSAGES.get(row.response_code, "declined"),
            # The answer to the authorization, the same on a replay: the load's later state is
            # what its confirmation or proof answers.
            status=LoadStatus.pending if approved else LoadStatus.declined,
            mac2=row.mac2 if approved else None,
            host_datetime=row.host_datetime if approved else None,
            replayed=self.replayed,
        )


def card_float(card_no: str) -> AccountRef:
    return AccountRef(AccountKind.card_float, card_no)


def source_account(row: PurseLoad) -> AccountRef:
    if row.source is LoadSource.cash:
        return AccountRef(AccountKind.counter_cash, row.source_ref or row.terminal_no)
    if row.source is LoadSource.transfer:
        if row.card_no is None:  # pragma: no cover - set before any posting
            raise ValueError("a transfer load needs the card")
        return AccountRef(AccountKind.card_transfer, row.card_no)
    if row.resident_id is None:  # pragma: no cover - set before any posting
        raise ValueError("an account load needs the card holder")
    return resident_account(row.resident_id)


def tac_record(row: PurseLoad, tac: str) -> dict[str, object]:
    """The TAC_VERIFY record of a load (reference/pboc.md §4: TAC over the balance after, the
    online counter before the increment, amount, type, terminal and the host date-time)."""
    return {
        "kind": "load",
        "asn": row.asn,
        "key_version": row.key_version,
        "amount": row.amount,
        "tx_type": TX_TYPE_EP_LOAD,
        "terminal_no": row.terminal_no,
        "datetime": row.host_datetime,
        "balance_after": row.balance_before + row.amount,
        "online_counter": row.online_counter,
        "tac": tac.upper(),
    }


# Who may put money on a card, and from where (least privilege, TerminalKind): cash only where
# staff take it; the holder's own money (online account, a replaced card's balance) also at
# self-service kiosks.
LOAD_SOURCES: dict[TerminalKind, frozenset[LoadSource]] = {
    TerminalKind.counter: frozenset(LoadSource),
    TerminalKind.kiosk: frozenset({LoadSource.account, LoadSource.transfer}),
}


def load_refusal(kind: TerminalKind, source: LoadSource) -> Declined | None:
    if source in LOAD_SOURCES.get(kind, frozenset()):
        return None
    return Declined(ResponseCode.not_permitted_to_terminal, f"{source}_load_at_{kind}")


def _decline(row: PurseLoad, declined: Declined) -> LoadOutcome:
    row.response_code = declined.code.value
    row.decline_reason = declined.reason[:64]
    row.status = LoadStatus.declined
    row.mac2 = None
    return LoadOutcome(row, replayed=False)


# --- authorization --------------------------------------------------------------------------


async def authorize_load(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    signed: SignedRequest,
    request: LoadRequest,
    *,
    hsm: HsmClient,
    settings: Settings,
) -> LoadOutcome:
    """A load from the card's INITIALIZE FOR LOAD answer: MAC2 and the host time, or a decline.

    The host date-time is chosen and the HSM's verdict on MAC1 taken with nothing held (a short
    read finds the date-times other loads of the card at this counter took); then, in the write
    transaction that taking the sequence number opens, the serial is claimed and the load
    decided (a repeated serial answers the first load, whatever the HSM said this time)."""
    if request.terminal_no != signed.terminal_no:
        raise ValidationFailed(
            "terminal_no must be the signed-in terminal's number (it is in MAC1)"
        )
    local = local_now(settings)
    async with reads() as reading:
        taken = await repo.host_datetimes_at(reading, request.asn.upper(), request.online_counter)
    host_datetime = _free_host_datetime(taken, local)
    verdict = await _mac2(hsm, request, host_datetime)
    from_account = request.source is LoadSource.account
    step = await pins.check_before_number(
        reads, hsm, signed, settings, asn=request.asn, serial=request.terminal_serial,
        pin_block=request.pin_block,
        needed=from_account and signed.kind is not None
        and load_refusal(signed.kind, request.source) is None,
    )  # fmt: skip
    terminal = await access.claim(session, signed)
    check = await pins.settle(session, settings, step)
    digest = request_hash("load", request)
    claimed = await messages.claim_serial(
        session,
        terminal,
        MessageKind.load,
        digest,
        local,
        terminal_serial=request.terminal_serial,
        amount=request.amount,
        asn=request.asn.upper(),
    )
    if claimed.claim is Claim.replay:
        existing = await repo.by_serial(session, terminal.terminal_no, request.terminal_serial)
        if existing is None:  # pragma: no cover - the claim and the load commit together
            raise Conflict("terminal serial is being used concurrently; retry")
        return LoadOutcome(existing, replayed=True)
    row = await repo.add(session, _new_load(terminal, request, digest))
    if claimed.claim is Claim.reversed:
        # A reversal named this serial before the load arrived: refused, nothing moves.
        return _decline(row, Declined(ResponseCode.invalid_transaction, "reversed_before_arrival"))
    outcome = await _decide(
        session, terminal, request, row, verdict, check, host_datetime, local, settings=settings
    )
    _mirror(claimed.row, row)
    await messages.record(session, claimed.row)
    return outcome


async def _mac2(
    hsm: HsmClient, request: LoadRequest, host_datetime: str
) -> bytes | Declined | None:
    """The HSM verifies MAC1 and makes MAC2 (before any write: docs/architecture.md); None when
    it did not answer (no verdict: the load is not decided, so its serial stays free)."""
    try:
        return await hsm.load_authorize(
            asn=bytes.fromhex(request.asn),
            key_version=request.key_version,
            random=bytes.fromhex(request.random),
            online_counter=request.online_counter,
            balance_before=request.balance,
            amount=request.amount,
            tx_type=TX_TYPE_EP_LOAD,
            terminal_no=bytes.fromhex(request.terminal_no),
            mac1=bytes.fromhex(request.mac1),
            host_datetime=host_datetime,
        )
    except HsmMacInvalid:
        return Declined(ResponseCode.system_error, "mac1_invalid")
    except HsmUnavailable:
        return None
    except HsmError as e:
        log.warning("load.hsm_error", code=e.code)
        return Declined(ResponseCode.system_error, f"hsm_{e.code}".lower())


def _new_load(terminal: TerminalContext, request: LoadRequest, digest: str) -> PurseLoad:
    return PurseLoad(
        terminal_id=terminal.terminal_id,
        terminal_no=terminal.terminal_no,
        terminal_serial=request.terminal_serial,
        merchant_no=terminal.merchant_no,
        request_hash=digest,
        asn=request.asn.upper(),
        source=request.source,
        source_ref=terminal.terminal_no if request.source is LoadSource.cash else None,
        amount=request.amount,
        balance_before=request.balance,
        online_counter=request.online_counter,
        key_version=request.key_version,
        random=request.random.upper(),
        mac1=request.mac1.upper(),
        response_code=ResponseCode.system_error.value,
        status=LoadStatus.declined,
        created_at=clock.now(),
    )


def _mirror(message: OnlineAuthorization, row: PurseLoad) -> None:
    """The load's first answer on its serial's message row (the load lives on in purse_loads)."""
    approved = row.response_code == ResponseCode.approved
    message.response_code = row.response_code
    message.decline_reason = row.decline_reason
    message.status = AuthStatus.approved if approved else AuthStatus.declined
    message.approved_amount = row.amount if approved else 0
    message.card_no = row.card_no
    message.resident_id = row.resident_id
    message.clearing_date = row.clearing_date
    message.ledger_transaction_id = row.ledger_transaction_id
    message.updated_at = clock.now()


def _free_host_datetime(taken: set[str], local: datetime) -> str:
    """The host date-time for CREDIT FOR LOAD: now, or the next second no other MAC2 of this card
    at this online counter took (two equal ones would make two loads' TACs equal)."""
    moment = local
    while (text := moment.strftime("%Y%m%d%H%M%S")) in taken:
        moment += timedelta(seconds=1)
    return text


async def _decide(
    session: AsyncSession,
    terminal: TerminalContext,
    request: LoadRequest,
    row: PurseLoad,
    verdict: bytes | Declined | None,
    check: PinCheck | None,
    host_datetime: str,
    local: datetime,
    *,
    settings: Settings,
) -> LoadOutcome:
    refusal = load_refusal(terminal.kind, request.source)
    if refusal is not None:
        return _decline(row, refusal)
    standing = await messages.card_standing(session, row.asn)
    refusal = card_refusal(standing, local.date())
    if refusal is not None or standing is None:
        return _decline(row, refusal or Declined(ResponseCode.unknown_card, "unknown_card"))
    row.card_no = standing.card_no
    row.resident_id = standing.resident_id
    if request.source is LoadSource.account:
        refusal = pins.refusal(request.pin_block, request.amount, check, terminal, settings)
        if refusal is not None:
            return _decline(row, refusal)
    if verdict is None:
        # An outage is not an answer: nothing of this load is kept (the request's transaction
        # rolls back, its claim on the serial with it), so the same load sent again is decided
        # then, and a replay of an earlier answer never needed the HSM.
        raise DependencyUnavailable("the HSM did not answer; send the same load again")
    if isinstance(verdict, Declined):
        return _decline(row, verdict)
    # The card's loads, locked: requests about one card resolve its loads one at a time.
    loads = await repo.of_card(session, row.asn, for_update=True)
    if any(
        x.host_datetime == host_datetime and x.online_counter == request.online_counter
        for x in loads
    ):
        # Another load of the card at this counter took the date-time since it was chosen.
        raise Conflict("a load of this card at this counter is being authorized; retry")

    # MAC1 verified: the balance and online counter are the card's own. Use them.
    stale = await repo.stale_against(session, row.asn, request.online_counter, row.id)
    if stale is not None:
        return _decline(row, Declined(ResponseCode.system_error, "stale_card_state"))
    await observe_card_state(
        session, loads, online_counter=request.online_counter, balance=request.balance,
        evidence=row, settings=settings,
    )  # fmt: skip
    if request.balance + request.amount > settings.purse_max_balance:
        return _decline(row, Declined(ResponseCode.exceeds_limit, "purse_max_balance"))

    day = await clearing_date(session, settings)
    row.clearing_date = day
    try:
        async with session.begin_nested():
            posted = await ledger.post(
                session,
                PostingRequest(
                    idempotency_key=f"load:{row.id}",
                    tx_type="load",
                    clearing_date=day,
                    entries=[
                        Entry(source_account(row), Side.debit, request.amount),
                        Entry(card_float(standing.card_no), Side.credit, request.amount),
                    ],
                    record_ref=f"purse_load:{row.id}",
                    description=f"{request.source} load at {terminal.terminal_no}",
                ),
            )
    except InsufficientFunds:
        return _decline(row, Declined(ResponseCode.insufficient_funds, "insufficient_funds"))
    row.ledger_transaction_id = posted.id
    row.host_datetime = host_datetime
    row.mac2 = verdict.hex().upper()
    row.response_code = ResponseCode.approved.value
    row.decline_reason = None
    row.status = LoadStatus.pending
    try:
        await session.flush()  # the database refuses a second MAC2 at this card, counter, time
    except IntegrityError:
        raise Conflict("a load of this card at this counter is being authorized; retry") from None
    return LoadOutcome(row, replayed=False)


async def transfer_waiting(
    session: AsyncSession, terminal: TerminalContext, asn: str
) -> TransferWaiting:
    """How much of the replaced card's balance the card may still take by a transfer load."""
    if load_refusal(terminal.kind, LoadSource.transfer) is not None:
        raise TerminalMayNotLoad(f"a {terminal.kind} terminal does not load purses")
    standing = await messages.card_standing(session, asn)
    if standing is None:
        raise NotFound("unknown card")
    amount = await ledger.balance(session, AccountRef(AccountKind.card_transfer, standing.card_no))
    return TransferWaiting(asn=asn.upper(), amount=amount)


# --- resolution -----------------------------------------------------------------------------


def _how(resolution: str, note: str) -> Resolve:
    return Resolve(resolver=SYSTEM, resolution=resolution, note=note)


def _aged_key(row: PurseLoad) -> str:
    return f"aged_load:{row.id}"


def _settle(row: PurseLoad, status: LoadStatus, resolution: Resolution) -> None:
    row.status = status
    row.resolution = resolution
    row.resolved_at = clock.now()


async def _confirm(
    session: AsyncSession,
    row: PurseLoad,
    resolution: Resolution,
    *,
    settings: Settings,
    tac: str | None = None,
    evidence: PurseLoad | None = None,
) -> None:
    """Mark the load as on the card; every other unresolved load at its counter never was."""
    _settle(row, LoadStatus.confirmed, resolution)
    if tac is not None:
        row.tac = tac.upper()
    if evidence is not None:
        row.resolved_by_id = evidence.id
    await session.flush()  # the unique (asn, counter) index for confirmed loads checks here
    await breaks.resolve_by_key(
        session, _aged_key(row), _how("load_confirmed", f"proven on the card ({resolution})")
    )
    for other in await repo.of_card(session, row.asn, for_update=True):
        if (
            other.id != row.id
            and other.status is LoadStatus.pending
            and other.online_counter == row.online_counter
        ):
            await refund(session, other, superseded_by=row, settings=settings)


async def refund(
    session: AsyncSession, row: PurseLoad, *, superseded_by: PurseLoad, settings: Settings
) -> None:
    """Reverse a pending load's posting to its source: it is proven not on the card."""
    if row.status is not LoadStatus.pending:
        raise Conflict(f"load {row.id} is {row.status}, not pending")
    if row.ledger_transaction_id is not None:
        reversal = await ledger.reverse(
            session,
            row.ledger_transaction_id,
            idempotency_key=f"load-refund:{row.id}",
            clearing_date=await clearing_date(session, settings),
            reason=f"load {row.id} not on the card: load {superseded_by.id} holds its online counter",
        )
        row.refund_transaction_id = reversal.id
    _settle(row, LoadStatus.refunded, Resolution.superseded)
    row.resolved_by_id = superseded_by.id
    await breaks.resolve_by_key(
        session,
        _aged_key(row),
        _how("load_refunded", f"load {superseded_by.id} holds its online counter"),
    )
    log.info("load.refunded", load_id=row.id, superseded_by=superseded_by.id, amount=row.amount)


@dataclass(frozen=True, slots=True)
class LoadUndo:
    """What a reversal of a load undid: nothing (no transaction), or the load's amount."""

    amount: int = 0
    ledger_transaction_id: int | None = None
    clearing_date: date | None = None


async def reverse_load(
    session: AsyncSession, terminal_no: str, terminal_serial: int, settings: Settings
) -> LoadUndo:
    """Void the terminal's load ``terminal_serial`` for its reversal (one serial space).

    Pending (the card never confirmed it): its posting is reversed to its source in one
    transaction (key ``load-void:<id>``) and a later confirmation or proof of it is refused.
    Declined, voided or refunded: nothing to undo. Confirmed: ``Declined`` 12, the chip holds the
    money and nothing moves.
    """
    found = await repo.by_serial(session, terminal_no, terminal_serial)
    if found is None or found.status is LoadStatus.declined:
        return LoadUndo()
    # Lock the card's loads together (id order), as every path about one card's loads does.
    row = next(
        x for x in await repo.of_card(session, found.asn, for_update=True) if x.id == found.id
    )
    if row.status is LoadStatus.confirmed:
        raise Declined(ResponseCode.invalid_transaction, "load_confirmed")
    if row.status is not LoadStatus.pending or row.ledger_transaction_id is None:
        return LoadUndo()
    day = await clearing_date(session, settings)
    try:
        reversal = await ledger.reverse(
            session,
            row.ledger_transaction_id,
            idempotency_key=f"load-void:{row.id}",
            clearing_date=day,
            reason=f"reversal of load {row.id} at {terminal_no}:{terminal_serial}",
        )
    except InsufficientFunds:
        # The source cannot take it back (a drawer paid out meanwhile): refused whole.
        raise Declined(ResponseCode.insufficient_funds, "source_cannot_take_back") from None
    row.refund_transaction_id = reversal.id
    _settle(row, LoadStatus.voided, Resolution.reversal)
    await breaks.resolve_by_key(
        session, _aged_key(row), _how("load_voided", "voided by the terminal's reversal")
    )
    log.info("load.voided", load_id=row.id, amount=row.amount)
    return LoadUndo(row.amount, reversal.id, day)


async def observe_card_state(
    session: AsyncSession,
    loads: list[PurseLoad],
    *,
    online_counter: int,
    balance: int,
    evidence: PurseLoad,
    settings: Settings,
) -> list[int]:
    """Resolve earlier pending loads from a genuine later card state; return the ids resolved.

    ``loads`` are the card's money-moving loads (locked). A pending load at counter c < the
    observed counter reached the card when it is the only unresolved load at c (and, when the
    card made no other load since, the balance is not above what the load left); a load at c
    with a confirmed sibling is refunded.
    """
    resolved: list[int] = []
    for load in loads:
        if (
            load.id == evidence.id
            or load.status is not LoadStatus.pending
            or load.online_counter >= online_counter
        ):
            continue
        same_counter = [
            x for x in loads if x.id != load.id and x.online_counter == load.online_counter
        ]
        confirmed = next((x for x in same_counter if x.status is LoadStatus.confirmed), None)
        if confirmed is not None:
            await refund(session, load, superseded_by=confirmed, settings=settings)
            resolved.append(load.id)
            continue
        if any(x.status is LoadStatus.pending for x in same_counter):
            continue  # two candidates for one credit: only a transaction proof can tell
        if (
            online_counter == load.online_counter + 1
            and balance > load.balance_before + load.amount
        ):
            # Since this load the card made no other load, so only purchases could have changed
            # its balance, and they lower it: more money than the load left is not consistent.
            log.warning("load.evidence_inconsistent", load_id=load.id, evidence_id=evidence.id)
            continue
        await _confirm(session, load, Resolution.later_record, evidence=evidence, settings=settings)
        resolved.append(load.id)
    return resolved


async def _tac_verify(hsm: HsmClient, records: list[dict[str, object]]) -> list[bool]:
    """TAC_VERIFY; an HSM that does not answer makes the request retryable (503), not a verdict."""
    try:
        return (await hsm.tac_verify(records)).results
    except HsmUnavailable as e:
        raise DependencyUnavailable("the HSM did not answer; send the confirmation again") from e


def _state(row: PurseLoad | None, tac_valid: bool) -> LoadState:
    if row is None:
        return LoadState(load_id=None, status=None, tac_valid=tac_valid)
    return LoadState(
        load_id=row.id,
        status=row.status,
        resolution=row.resolution.value if row.resolution else None,
        tac_valid=tac_valid,
    )


async def _undone_on_card(
    session: AsyncSession, row: PurseLoad, evidence: str, settings: Settings
) -> LoadState:
    """The card proves a load the books undid (voided by a reversal, or refunded): the chip holds
    money its source also got back. Nothing is confirmed; a break opens for finance."""
    log.error("load.undone_but_on_card", load_id=row.id, status=row.status, evidence=evidence)
    await breaks.open_break(
        session,
        NewBreak(
            kind=BreakKind.load_undone_on_card,
            clearing_date=await clearing_date(session, settings),
            reason=f"the card proves load {row.id} ({evidence}) that the host {row.status}",
            amount=row.amount,
            ref=BreakRef(
                source="purse_load",
                source_id=row.id,
                asn=row.asn,
                counter=row.online_counter,
                terminal_no=row.terminal_no,
            ),
            open_key=f"load_undone_on_card:{row.id}",
        ),
    )
    return _state(row, tac_valid=True)


async def _locked(session: AsyncSession, found: PurseLoad) -> PurseLoad:
    """``found`` again, with every load of its card locked (id order, as every path locks)."""
    return next(
        x for x in await repo.of_card(session, found.asn, for_update=True) if x.id == found.id
    )


async def confirm_load(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    signed: SignedRequest,
    request: ConfirmRequest,
    *,
    hsm: HsmClient,
    settings: Settings,
) -> LoadState:
    """The terminal's confirmation with the card's TAC from CREDIT FOR LOAD (idempotent). The
    load is read and its TAC verified with nothing held; the write transaction opens after."""
    tac = request.tac.upper()
    async with reads() as reading:
        seen = await repo.by_serial(reading, signed.terminal_no, request.terminal_serial)
    valid: bool | None = None
    if seen is not None and seen.status is not LoadStatus.declined and seen.tac != tac:
        valid = (await _tac_verify(hsm, [tac_record(seen, tac)]))[0]
    terminal = await access.claim(session, signed)
    found = await repo.by_serial(session, terminal.terminal_no, request.terminal_serial)
    if found is None or found.status is LoadStatus.declined:
        raise NotFound(f"no authorized load with terminal serial {request.terminal_serial}")
    row = await _locked(session, found)
    if row.status is LoadStatus.confirmed and row.tac == tac:
        return _state(row, tac_valid=True)
    if valid is None or seen is None or seen.id != row.id:
        # Authorized or confirmed meanwhile: the verdict was not asked for this state.
        raise Conflict("the load changed while its TAC was checked; send the confirmation again")
    if not valid:
        log.warning("load.tac_invalid", load_id=row.id)
        return _state(row, tac_valid=False)
    if row.status in (LoadStatus.refunded, LoadStatus.voided):
        return await _undone_on_card(session, row, "confirmation", settings)
    if row.status is LoadStatus.pending:
        await _confirm(session, row, Resolution.tac, tac=tac, settings=settings)
    return _state(row, tac_valid=True)


async def prove_load(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    signed: SignedRequest,
    request: ProveRequest,
    *,
    hsm: HsmClient,
    settings: Settings,
) -> LoadState:
    """A GET TRANSACTION PROVE answer (type 02, counter = load counter + 1) from a later tap; the
    candidates are read and their TACs verified with nothing held, then the write transaction."""
    asn = request.asn.upper()
    counter = request.online_counter - 1
    tac = request.tac.upper()
    async with reads() as reading:
        candidates = [
            x for x in await repo.of_card(reading, asn)
            if x.online_counter == counter and x.host_datetime is not None
        ]  # fmt: skip
    results = await _tac_verify(hsm, [tac_record(x, tac) for x in candidates]) if candidates else []
    matches = [x.id for x, ok in zip(candidates, results, strict=True) if ok]
    await access.claim(session, signed)
    if len(matches) != 1:
        if matches:  # distinct host date-times make this impossible; never guess
            log.error("load.prove_ambiguous", load_ids=matches)
        return _state(None, tac_valid=False)
    match = next(x for x in await repo.of_card(session, asn, for_update=True) if x.id == matches[0])
    if match.status in (LoadStatus.refunded, LoadStatus.voided):
        return await _undone_on_card(session, match, "transaction proof", settings)
    if match.status is LoadStatus.pending:
        await _confirm(session, match, Resolution.prove, tac=tac, settings=settings)
    return _state(match, tac_valid=True)


# --- ageing ---------------------------------------------------------------------------------


async def age_pending_loads(session: AsyncSession, settings: Settings, now: datetime) -> int:
    """Open an ``aged_load`` break for each load pending longer than the configured time without
    card evidence; it stays pending (only evidence or a reversal resolves it). How many aged."""
    cutoff = now - timedelta(seconds=settings.load_evidence_break_after_seconds)
    rows = await repo.pending_unaged(session, cutoff)
    for row in rows:
        row.aged_at = now
        await breaks.open_break(
            session,
            NewBreak(
                kind=BreakKind.aged_load,
                clearing_date=row.clearing_date or await clearing_date(session, settings),
                reason=(
                    f"load {row.id} pending since {row.created_at.isoformat(timespec='seconds')} "
                    "without card evidence"
                ),
                amount=row.amount,
                ref=BreakRef(
                    source="purse_load",
                    source_id=row.id,
                    asn=row.asn,
                    counter=row.online_counter,
                    terminal_no=row.terminal_no,
                ),
                open_key=_aged_key(row),
            ),
        )
    return len(rows)


async def pending(session: AsyncSession) -> list[PurseLoad]:
    """Loads still waiting for card evidence, oldest first."""
    return await repo.pending(session)
