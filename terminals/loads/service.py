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
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.clearing.service import clearing_date
from cardsvc.errors import (
    Conflict,
    DependencyUnavailable,
    Forbidden,
    IdempotencyConflict,
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
from terminals.online import repository as online_repo
from terminals.online.schemas import ResponseCode
from terminals.online.service import (
    MESSAGES,
    Declined,
    card_refusal,
    local_now,
    request_hash,
    resident_account,
)
from terminals.registry.models import TerminalKind

log = get_logger(__name__)

TX_TYPE_EP_LOAD = 0x02  # reference/pboc.md §4: TxType 02 = EP load


class LoadAlreadyRefunded(Conflict):
    """A TAC verified for a load that was refunded: card evidence contradicts the books."""


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
            status=row.status,
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


async def _mac2(hsm: HsmClient, request: LoadRequest, host_datetime: str) -> bytes | Declined:
    """The HSM verifies MAC1 and makes MAC2 (before any write: docs/architecture.md §11)."""
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
        return Declined(ResponseCode.unavailable, "hsm_unavailable")
    except HsmError as e:
        log.warning("load.hsm_error", code=e.code)
        return Declined(ResponseCode.system_error, f"hsm_{e.code}".lower())


async def authorize_load(
    session: AsyncSession,
    signed: SignedRequest,
    request: LoadRequest,
    *,
    hsm: HsmClient,
    settings: Settings,
) -> LoadOutcome:
    """The HSM's verdict on MAC1 first, with nothing held; then, in the write transaction that
    taking the sequence number opens, the checks and the posting (a repeated serial answers the
    first load, whatever the HSM said this time)."""
    now = clock.now()
    if request.terminal_no != signed.terminal_no:
        raise ValidationFailed(
            "terminal_no must be the signed-in terminal's number (it is in MAC1)"
        )
    local = local_now(settings, now)
    host_datetime = local.strftime("%Y%m%d%H%M%S")
    verdict = await _mac2(hsm, request, host_datetime)
    terminal = await access.claim(session, signed)
    asn = request.asn.upper()
    digest = request_hash("load", request)
    new_id = await repo.insert_if_new(
        session,
        {
            "terminal_id": terminal.terminal_id,
            "terminal_no": terminal.terminal_no,
            "terminal_serial": request.terminal_serial,
            "merchant_no": terminal.merchant_no,
            "request_hash": digest,
            "asn": asn,
            "source": request.source,
            "source_ref": terminal.terminal_no if request.source is LoadSource.cash else None,
            "amount": request.amount,
            "balance_before": request.balance,
            "online_counter": request.online_counter,
            "key_version": request.key_version,
            "random": request.random.upper(),
            "mac1": request.mac1.upper(),
            "response_code": ResponseCode.system_error.value,
            "status": LoadStatus.declined,
            "created_at": now,
        },
    )
    if new_id is None:
        existing = await repo.by_serial(session, terminal.terminal_no, request.terminal_serial)
        if existing is None:  # pragma: no cover - the conflicting insert rolled back
            raise IdempotencyConflict("terminal serial is being used concurrently; retry")
        if existing.request_hash != digest:
            raise IdempotencyConflict(
                f"terminal serial {request.terminal_serial} was used for another load",
                load_id=existing.id,
            )
        return LoadOutcome(existing, replayed=True)
    row = await repo.get(session, new_id)
    refusal = load_refusal(terminal.kind, request.source)
    if refusal is not None:
        return _decline(row, refusal)
    standing = await online_repo.card_standing(session, asn, now)
    refusal = card_refusal(standing, local.date())
    if refusal is not None or standing is None:
        return _decline(row, refusal or Declined(ResponseCode.unknown_card, "unknown_card"))
    row.card_no = standing.card_no
    row.resident_id = standing.resident_id
    if isinstance(verdict, Declined):
        return _decline(row, verdict)
    mac2 = verdict

    # MAC1 verified: the balance and online counter are the card's own. Use them.
    loads = await repo.of_card(session, asn, for_update=True)
    stale = await repo.stale_against(session, asn, request.online_counter, row.id)
    if stale is not None:
        return _decline(row, Declined(ResponseCode.system_error, "stale_card_state"))
    await observe_card_state(
        session, loads, online_counter=request.online_counter, balance=request.balance,
        evidence=row, now=now, settings=settings,
    )  # fmt: skip
    if request.balance + request.amount > settings.purse_max_balance:
        return _decline(row, Declined(ResponseCode.exceeds_limit, "purse_max_balance"))

    day = await clearing_date(session, settings, now=now)
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
    row.mac2 = mac2.hex().upper()
    row.response_code = ResponseCode.approved.value
    row.decline_reason = None
    row.status = LoadStatus.pending
    return LoadOutcome(row, replayed=False)


async def transfer_waiting(
    session: AsyncSession, terminal: TerminalContext, asn: str
) -> TransferWaiting:
    """How much of the replaced card's balance the card may still take by a transfer load."""
    if load_refusal(terminal.kind, LoadSource.transfer) is not None:
        raise TerminalMayNotLoad(f"a {terminal.kind} terminal does not load purses")
    standing = await online_repo.card_standing(session, asn, clock.now())
    if standing is None:
        raise NotFound("unknown card")
    amount = await ledger.balance(session, AccountRef(AccountKind.card_transfer, standing.card_no))
    return TransferWaiting(asn=asn.upper(), amount=amount)


# --- resolution -----------------------------------------------------------------------------


async def _confirm(
    session: AsyncSession,
    row: PurseLoad,
    resolution: Resolution,
    now: datetime,
    *,
    settings: Settings,
    tac: str | None = None,
    evidence: PurseLoad | None = None,
) -> None:
    """Mark the load as on the card; every other unresolved load at its counter never was."""
    row.status = LoadStatus.confirmed
    row.resolution = resolution
    row.resolved_at = now
    if tac is not None:
        row.tac = tac.upper()
    if evidence is not None:
        row.resolved_by_id = evidence.id
    await session.flush()  # the unique (asn, counter) index for confirmed loads checks here
    for other in await repo.of_card(session, row.asn, for_update=True):
        if (
            other.id != row.id
            and other.status is LoadStatus.pending
            and other.online_counter == row.online_counter
        ):
            await refund(session, other, superseded_by=row, now=now, settings=settings)


async def refund(
    session: AsyncSession,
    row: PurseLoad,
    *,
    superseded_by: PurseLoad,
    now: datetime,
    settings: Settings,
) -> None:
    """Reverse a pending load's posting to its source: it is proven not on the card."""
    if row.status is not LoadStatus.pending:
        raise Conflict(f"load {row.id} is {row.status}, not pending")
    if row.ledger_transaction_id is not None:
        reversal = await ledger.reverse(
            session,
            row.ledger_transaction_id,
            idempotency_key=f"load-refund:{row.id}",
            clearing_date=await clearing_date(session, settings, now=now),
            reason=f"load {row.id} not on the card: load {superseded_by.id} holds its online counter",
        )
        row.refund_transaction_id = reversal.id
    row.status = LoadStatus.refunded
    row.resolution = Resolution.superseded
    row.resolved_by_id = superseded_by.id
    row.resolved_at = now
    log.info("load.refunded", load_id=row.id, superseded_by=superseded_by.id, amount=row.amount)


async def observe_card_state(
    session: AsyncSession,
    loads: list[PurseLoad],
    *,
    online_counter: int,
    balance: int,
    evidence: PurseLoad,
    now: datetime,
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
            await refund(session, load, superseded_by=confirmed, now=now, settings=settings)
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
        await _confirm(
            session, load, Resolution.later_record, now, evidence=evidence, settings=settings
        )
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
    now = clock.now()
    tac = request.tac.upper()
    async with reads() as reading:
        seen = await repo.by_serial(reading, signed.terminal_no, request.terminal_serial)
    valid: bool | None = None
    if seen is not None and seen.status is not LoadStatus.declined and seen.tac != tac:
        valid = (await _tac_verify(hsm, [tac_record(seen, tac)]))[0]
    terminal = await access.claim(session, signed)
    row = await repo.by_serial(
        session, terminal.terminal_no, request.terminal_serial, for_update=True
    )
    if row is None or row.status is LoadStatus.declined:
        raise NotFound(f"no authorized load with terminal serial {request.terminal_serial}")
    if row.status is LoadStatus.confirmed and row.tac == tac:
        return _state(row, tac_valid=True)
    if valid is None or seen is None or seen.id != row.id:
        # Authorized or confirmed meanwhile: the verdict was not asked for this state.
        raise Conflict("the load changed while its TAC was checked; send the confirmation again")
    if not valid:
        log.warning("load.tac_invalid", load_id=row.id)
        return _state(row, tac_valid=False)
    if row.status is LoadStatus.refunded:
        log.error("load.tac_after_refund", load_id=row.id)
        raise LoadAlreadyRefunded(f"load {row.id} was refunded but its TAC verifies")
    if row.status is LoadStatus.pending:
        await _confirm(session, row, Resolution.tac, now, tac=tac, settings=settings)
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
    now = clock.now()
    asn = request.asn.upper()
    counter = request.online_counter - 1
    tac = request.tac.upper()
    async with reads() as reading:
        candidates = [
            x for x in await repo.of_card(reading, asn)
            if x.online_counter == counter and x.host_datetime is not None
        ]  # fmt: skip
    results = await _tac_verify(hsm, [tac_record(x, tac) for x in candidates]) if candidates else []
    proven = next((x.id for x, ok in zip(candidates, results, strict=True) if ok), None)
    await access.claim(session, signed)
    if proven is None:
        return _state(None, tac_valid=False)
    match = next(x for x in await repo.of_card(session, asn, for_update=True) if x.id == proven)
    if match.status is LoadStatus.refunded:
        log.error("load.prove_after_refund", load_id=match.id)
        raise LoadAlreadyRefunded(f"load {match.id} was refunded but its proof verifies")
    if match.status is LoadStatus.pending:
        await _confirm(session, match, Resolution.prove, now, tac=tac, settings=settings)
    return _state(match, tac_valid=True)
