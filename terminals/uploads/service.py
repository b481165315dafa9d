"""Offline upload ingestion (DESIGN §9; reference/pboc.md §9; reference/settlement_hsm.md §1.3-§1.5).

One upload is one database transaction: the batch, every record (refused ones too, with their
code), the break items and ONE ledger posting (card floats debited, the operator's pending
clearing account credited) commit together or not at all. Work per batch is a fixed number of
round trips: one card lookup, one blacklist lookup, one TAC_VERIFY, two duplicate lookups, one
chain lookup, bulk inserts and the posting; never one per record.

Result codes per record, checked in this order:

- 02 invalid data: a field missing, of the wrong type or out of range; amount above the balance
  or the fare; a time that is not a calendar time or lies beyond the allowed clock skew ahead;
- 07 unknown terminal or PSAM mismatch: the record's terminal number is not the uploading
  terminal's, or the batch's PSAM is not the one registered for it;
- 05 expired: older than ``upload_max_record_age_days`` (reference/settlement_hsm.md §1.5);
- 06 unknown card: no issued card has that ASN;
- 01 TAC invalid (HSM TAC_VERIFY, reference/pboc.md §9.2.1), which opens a ``tac_failed`` break;
- 03 duplicate: (ASN, offline counter) or (terminal number, terminal serial) already held by an
  accepted record, in the database or earlier in the same batch;
- 04 gray: the terminal never saw the card's answer; held, with a ``gray`` break item;
- 00 accepted, posted, and flagged when the card is on the blacklist (its TAC proves the money
  moved: reference/pboc.md §9.2.5).

Records refused 02, 05 or 07 are TAC-checked all the same (in the same TAC_VERIFY), whenever the
fields the TAC covers are well formed: a valid TAC proves the chip paid, so such a record opens a
``refused_paid`` break (its amount, card, terminal and the batch's clearing date) although it is
never booked.

A gap in a card's offline counters (against the highest accepted counter) opens one
``counter_gap`` break per missing counter (at most ``MAX_GAP_ITEMS`` per gap); a later record
that fills it resolves it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any, Final

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.blacklist import service as blacklist
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.breaks.schemas import BreakRef, NewBreak, Resolve
from cardsvc.cards.models import CardStatus
from cardsvc.clearing import service as clearing
from cardsvc.errors import Conflict, DependencyUnavailable, IdempotencyConflict, ValidationFailed
from cardsvc.hsm import HsmClient, HsmUnavailable
from cardsvc.ledger import service as ledger
from cardsvc.ledger.errors import InsufficientFunds
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.settings import Settings
from terminals.access import service as access
from terminals.access.context import TerminalContext
from terminals.access.service import SignedRequest
from terminals.lists import service as lists
from terminals.uploads import repository
from terminals.uploads.models import ResultCode
from terminals.uploads.schemas import RecordResult, UploadRequest, UploadResponse

MAX_GAP_ITEMS: Final = 50
U16: Final = 0xFFFF
U32: Final = 0xFFFFFFFF
_ASN = re.compile(r"^[0-9A-F]{16}$")
_DIGITS12 = re.compile(r"^\d{12}$")
_DIGITS14 = re.compile(r"^\d{14}$")
_TAC = re.compile(r"^[0-9A-F]{8}$")
_CARD_TYPE = re.compile(r"^\d{2}$")
FIELDS: Final = frozenset(
    {
        "asn", "card_type", "tx_type", "offline_counter", "balance_before", "amount", "fare",
        "terminal_no", "terminal_serial", "datetime", "key_version", "tac", "gray", "compound",
    }
)  # fmt: skip
COMPOUND_INT_MAX: Final = 2**53 - 1  # exact in every JSON reader
COMPOUND_FIELDS: Final = frozenset(
    {"line", "station", "direction", "entry_station", "entry_time", "transfer"}
)
ISSUED: Final = frozenset(s.value for s in CardStatus) - {CardStatus.personalizing.value}
GAP_FILLED: Final = Resolve(
    resolver="system:uploads", resolution="filled", note="filled by a later upload"
)


class RecordInvalid(ValueError):
    pass


@dataclass(slots=True)
class Parsed:
    """One record after field validation (reference/pboc.md §9.1)."""

    asn: str
    card_type: str
    tx_type: int
    offline_counter: int
    balance_before: int
    amount: int
    fare: int
    terminal_no: str
    terminal_serial: int
    tx_datetime: str
    tx_time: datetime
    key_version: int
    tac: str | None
    gray: bool
    compound: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TacFields:
    """What a record's TAC covers (reference/pboc.md §3.2), and the card and counter it names."""

    asn: str
    tx_type: int
    amount: int
    terminal_no: str
    terminal_serial: int
    tx_datetime: str
    key_version: int
    tac: str
    offline_counter: int | None  # not under the TAC; None when malformed


@dataclass(slots=True)
class Outcome:
    index: int
    raw: Any
    parsed: Parsed | None = None
    tac: TacFields | None = None  # what TAC_VERIFY checks (None: gray, or not well formed)
    code: ResultCode | None = None
    detail: str | None = None
    blacklisted: bool = False
    card_id: int | None = None
    card_no: str | None = None
    breaks: list[tuple[BreakKind, int | None, str]] = field(
        default_factory=list
    )  # (kind, counter, detail)

    def subject(self) -> TacFields | Parsed | None:
        """Where a break of this record takes its card, terminal and amount from."""
        return self.parsed or self.tac


def _int(raw: Mapping[str, Any], name: str, low: int, high: int) -> int:
    value = raw.get(name)
    if type(value) is not int or not low <= value <= high:
        raise RecordInvalid(f"{name}: an integer in {low}..{high} is required")
    return value


def _str(raw: Mapping[str, Any], name: str, pattern: re.Pattern[str]) -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not pattern.match(value):
        raise RecordInvalid(f"{name}: malformed")
    return value


def parse_local(dt14: str, zone: tzinfo) -> datetime:
    """Card/terminal time (local wall clock in ``zone``, the settings' zone) as aware UTC."""
    try:
        if len(dt14) == 14 and dt14.isascii() and dt14.isdigit():
            # Fixed-width fields: what strptime("%Y%m%d%H%M%S") accepts for 14 ASCII digits
            # (every field must then take two digits), at a fraction of its cost per record.
            local = datetime(
                int(dt14[0:4]), int(dt14[4:6]), int(dt14[6:8]),
                int(dt14[8:10]), int(dt14[10:12]), int(dt14[12:14]), tzinfo=zone,
            )  # fmt: skip
        else:
            local = datetime.strptime(dt14, "%Y%m%d%H%M%S").replace(tzinfo=zone)
        # Year 0001 local time lies before datetime.min in UTC: not a time a card can hold.
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        raise RecordInvalid("datetime: not a calendar time YYYYMMDDhhmmss") from None


def _compound(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not set(value) <= COMPOUND_FIELDS:
        raise RecordInvalid(f"compound: an object with keys among {sorted(COMPOUND_FIELDS)}")
    for key, item in value.items():
        if isinstance(item, bool) and key == "transfer":
            continue
        if not (isinstance(item, str) and len(item) <= 16 and item.isascii()) and not (
            type(item) is int and 0 <= item <= COMPOUND_INT_MAX
        ):
            raise RecordInvalid(
                f"compound.{key}: a short ASCII string or an integer in 0..{COMPOUND_INT_MAX}"
            )
    return dict(value)


def parse_record(raw: Any, zone: tzinfo) -> Parsed:
    if not isinstance(raw, dict):
        raise RecordInvalid("a record is a JSON object")
    unknown = set(raw) - FIELDS
    if unknown:
        raise RecordInvalid(f"unknown fields: {', '.join(sorted(unknown))}")
    gray = raw.get("gray", False)
    if not isinstance(gray, bool):
        raise RecordInvalid("gray: true or false")
    tx_type = _int(raw, "tx_type", 0, 255)
    if tx_type not in (6, 9):
        raise RecordInvalid("tx_type: 6 (purchase) or 9 (compound purchase)")
    balance_before = _int(raw, "balance_before", 0, U32)
    amount = _int(raw, "amount", 0, U32)
    fare = _int(raw, "fare", 0, U32)
    if amount > balance_before:
        raise RecordInvalid("amount: above the balance before")
    if amount > fare:
        raise RecordInvalid("amount: above the fare before concession")
    # A gray record has no TAC: the card's answer never reached the terminal.
    tac = None if gray and raw.get("tac") is None else _str(raw, "tac", _TAC)
    dt14 = _str(raw, "datetime", _DIGITS14)
    return Parsed(
        asn=_str(raw, "asn", _ASN),
        card_type=_str(raw, "card_type", _CARD_TYPE),
        tx_type=tx_type,
        offline_counter=_int(raw, "offline_counter", 0, U16),
        balance_before=balance_before,
        amount=amount,
        fare=fare,
        terminal_no=_str(raw, "terminal_no", _DIGITS12),
        terminal_serial=_int(raw, "terminal_serial", 0, U32),
        tx_datetime=dt14,
        tx_time=parse_local(dt14, zone),
        key_version=_int(raw, "key_version", 1, 255),
        tac=tac,
        gray=gray,
        compound=_compound(raw.get("compound")),
    )


# Refused records that are TAC-checked all the same: a valid TAC means the chip paid.
CHECKED_WHEN_REFUSED: Final = frozenset(
    {ResultCode.invalid_data, ResultCode.expired, ResultCode.unknown_terminal}
)


def tac_fields(raw: Any, zone: tzinfo) -> TacFields | None:
    """The TAC inputs of a record that failed validation, when each of them is well formed."""
    if not isinstance(raw, dict) or raw.get("gray") is True:
        return None
    try:
        dt14 = _str(raw, "datetime", _DIGITS14)
        parse_local(dt14, zone)
        counter = raw.get("offline_counter")
        return TacFields(
            asn=_str(raw, "asn", _ASN),
            tx_type=_int(raw, "tx_type", 0, 255),
            amount=_int(raw, "amount", 0, U32),
            terminal_no=_str(raw, "terminal_no", _DIGITS12),
            terminal_serial=_int(raw, "terminal_serial", 0, U32),
            tx_datetime=dt14,
            key_version=_int(raw, "key_version", 1, 255),
            tac=_str(raw, "tac", _TAC),
            offline_counter=counter if type(counter) is int and 0 <= counter <= U16 else None,
        )
    except RecordInvalid:
        return None


def _tac_of(p: Parsed) -> TacFields | None:
    if p.gray or p.tac is None:
        return None
    return TacFields(
        asn=p.asn, tx_type=p.tx_type, amount=p.amount, terminal_no=p.terminal_no,
        terminal_serial=p.terminal_serial, tx_datetime=p.tx_datetime, key_version=p.key_version,
        tac=p.tac, offline_counter=p.offline_counter,
    )  # fmt: skip


def content_hash(request: UploadRequest) -> str:
    canonical = json.dumps(
        request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def _integer_amount(raw: Any) -> int:
    if isinstance(raw, dict):
        value = raw.get("amount")
        if type(value) is int:
            return value
    return 0


async def ingest(
    reads: async_sessionmaker[AsyncSession],
    session: AsyncSession,
    hsm: HsmClient,
    settings: Settings,
    signed: SignedRequest,
    request: UploadRequest,
) -> UploadResponse:
    """Verify, store and post one upload; a repeat of the same batch returns the first answer.

    The TACs are verified first, with nothing held (a batch already stored is looked up in a
    short session of its own and needs none); the write transaction opens when the sequence
    number is taken, after the HSM answered (docs/architecture.md §11)."""
    digest = content_hash(request)
    if len(request.records) != request.record_count:
        raise ValidationFailed(
            f"record_count {request.record_count} but {len(request.records)} records"
        )
    if len(request.records) > settings.upload_max_records:
        raise ValidationFailed(f"at most {settings.upload_max_records} records per upload")
    if sum(_integer_amount(r) for r in request.records) != request.total_amount:
        raise ValidationFailed("total_amount is not the sum of the records' amounts")
    now = clock.now()
    async with reads() as reading:
        stored = await repository.batch_by_no(reading, signed.terminal_id, request.batch_no)
    verdicts: dict[int, str | None] = {}
    if stored is None:
        first = _validate(request, signed.terminal_no, signed.psam_no, settings, now)
        verdicts = await _tac_verdicts(hsm, first)

    terminal = await access.claim(session, signed)
    # First in the write transaction: nothing runs between the ledger posting (which locks the
    # merchant's pending account) and the commit but the batch's final update.
    await lists.report_versions(
        session, terminal.terminal_id, request.blacklist_version, request.params_version
    )
    existing = await repository.batch_by_no(session, terminal.terminal_id, request.batch_no)
    if existing is not None:
        if existing.content_hash == digest:
            return UploadResponse.model_validate(existing.response)
        raise IdempotencyConflict(
            f"batch {request.batch_no} was uploaded before with other content"
        )
    outcomes = _validate(request, terminal.terminal_no, terminal.psam_no, settings, now)
    await _check_cards(session, outcomes)
    _apply_tacs(outcomes, verdicts)
    await _deduplicate(session, outcomes)
    accepted = [o for o in outcomes if o.code is ResultCode.accepted]
    if accepted:
        listed = await blacklist.blacklisted_among(
            session, {o.parsed.asn for o in accepted if o.parsed}
        )
        for o in accepted:
            o.blacklisted = o.parsed is not None and o.parsed.asn in listed
    gap_keys = await _chain(session, outcomes)
    clearing_date = await clearing.clearing_date(session, settings, now=now)
    try:
        return await _store(
            session, request, terminal, outcomes, digest, clearing_date, gap_keys, now
        )
    except IntegrityError as exc:
        # A concurrent upload took the batch number or a record key between our checks and
        # the insert: nothing is kept; the terminal retries and gets a definite answer.
        raise Conflict("a concurrent upload holds this batch or one of its records; retry") from exc


def _validate(
    request: UploadRequest, terminal_no: str, psam_no: str, settings: Settings, now: datetime
) -> list[Outcome]:
    future_limit = now + timedelta(seconds=settings.terminal_clock_skew_seconds)
    oldest = now - timedelta(days=settings.upload_max_record_age_days)
    psam_ok = request.psam_no == psam_no
    zone = settings.zone
    outcomes: list[Outcome] = []
    for index, raw in enumerate(request.records):
        outcome = Outcome(index=index, raw=raw)
        outcomes.append(outcome)
        try:
            parsed = parse_record(raw, zone)
        except RecordInvalid as exc:
            outcome.code, outcome.detail = ResultCode.invalid_data, str(exc)
            outcome.tac = tac_fields(raw, zone)
            continue
        outcome.parsed = parsed
        outcome.tac = _tac_of(parsed)
        if parsed.tx_time > future_limit:
            outcome.code, outcome.detail = ResultCode.invalid_data, "datetime: in the future"
        elif parsed.terminal_no != terminal_no:
            outcome.code, outcome.detail = (
                ResultCode.unknown_terminal,
                "terminal_no is not the uploading terminal",
            )
        elif not psam_ok:
            outcome.code, outcome.detail = (
                ResultCode.unknown_terminal,
                "PSAM is not the one registered",
            )
        elif parsed.tx_time < oldest:
            outcome.code, outcome.detail = ResultCode.expired, "older than the upload window"
    return outcomes


async def _check_cards(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    pending = [o for o in outcomes if o.code is None and o.parsed is not None]
    cards = await repository.cards_by_asn(session, {o.parsed.asn for o in pending if o.parsed})
    for o in pending:
        assert o.parsed is not None  # noqa: S101 - filtered above
        card = cards.get(o.parsed.asn)
        if card is None or card.status not in ISSUED:
            o.code, o.detail = ResultCode.unknown_card, "no issued card with this ASN"
            continue
        o.card_id, o.card_no = card.id, card.card_no


def tac_wire(t: TacFields) -> dict[str, object]:
    # TAC_VERIFY wire format (docs/hsm-protocol.md; reference/pboc.md §3.2 TAC inputs).
    return {
        "kind": "purchase",
        "asn": t.asn,
        "key_version": t.key_version,
        "amount": t.amount,
        "tx_type": t.tx_type,
        "terminal_no": t.terminal_no,
        "terminal_serial": t.terminal_serial,
        "datetime": t.tx_datetime,
        "tac": t.tac,
    }


async def _tac_verdicts(hsm: HsmClient, outcomes: Sequence[Outcome]) -> dict[int, str | None]:
    """One TAC_VERIFY for every record that may still be accepted (whether its card is known is
    decided later, in the write transaction), and for those refused 02, 05 or 07 whose TAC
    fields are well formed (a valid TAC there means the chip paid): record index → None when its
    TAC verifies, else why not."""
    checked = [
        o
        for o in outcomes
        if o.tac is not None and (o.code is None or o.code in CHECKED_WHEN_REFUSED)
    ]
    if not checked:
        return {}
    try:
        verdict = await hsm.tac_verify([tac_wire(o.tac) for o in checked if o.tac])
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable: upload again later") from exc
    return {
        o.index: None if ok else verdict.errors.get(i, "TAC does not verify")
        for i, (o, ok) in enumerate(zip(checked, verdict.results, strict=True))
    }


def _apply_tacs(outcomes: Sequence[Outcome], verdicts: Mapping[int, str | None]) -> None:
    for o in outcomes:
        if o.tac is None:
            continue
        if o.code in CHECKED_WHEN_REFUSED:
            if o.index in verdicts and verdicts[o.index] is None:
                o.breaks.append(
                    (
                        BreakKind.refused_paid,
                        o.tac.offline_counter,
                        f"refused {o.code.value} ({o.detail}) but its TAC verifies: the card paid",
                    )
                )
            continue
        if o.code is not None:
            continue
        if o.index not in verdicts:
            # The terminal's registration changed between the check and the write: no verdict
            # was asked for this record. Nothing is kept; the terminal sends the batch again.
            raise Conflict("the terminal's registration changed during the upload; retry")
        failure = verdicts[o.index]
        if failure is not None:
            o.code, o.detail = ResultCode.tac_invalid, failure
            o.breaks.append(
                (
                    BreakKind.tac_failed,
                    o.tac.offline_counter,
                    "TAC failed; re-examine with the card chain",
                )
            )


async def _deduplicate(session: AsyncSession, outcomes: Sequence[Outcome]) -> None:
    pending = [o for o in outcomes if o.code is None and o.parsed is not None]
    card_keys = {(o.parsed.asn, o.parsed.offline_counter) for o in pending if o.parsed}
    serial_keys = {(o.parsed.terminal_no, o.parsed.terminal_serial) for o in pending if o.parsed}
    held_cards, held_serials = await repository.claimed_keys(session, card_keys, serial_keys)
    gray_seen: set[tuple[str, int]] = set()
    for o in pending:
        p = o.parsed
        assert p is not None  # noqa: S101
        card_key, serial_key = (p.asn, p.offline_counter), (p.terminal_no, p.terminal_serial)
        if card_key in held_cards:
            o.code, o.detail = ResultCode.duplicate, "ASN and offline counter already accepted"
        elif serial_key in held_serials:
            o.code, o.detail = ResultCode.duplicate, "terminal serial already accepted"
        elif p.gray:
            if card_key in gray_seen:
                o.code, o.detail = ResultCode.duplicate, "same gray record twice in the batch"
            else:
                gray_seen.add(card_key)
                o.code, o.detail = ResultCode.gray, "gray: held until the card chain settles it"
                o.breaks.append((BreakKind.gray, p.offline_counter, "gray record held"))
        else:
            o.code = ResultCode.accepted
            held_cards.add(card_key)
            held_serials.add(serial_key)


async def _chain(session: AsyncSession, outcomes: Sequence[Outcome]) -> set[tuple[str, int]]:
    """Counter gaps per card (reference/pboc.md §9.2.3); returns the keys that fill old gaps."""
    by_card: dict[str, list[Outcome]] = defaultdict(list)
    for o in outcomes:
        if o.code is ResultCode.accepted and o.parsed is not None:
            by_card[o.parsed.asn].append(o)
    if not by_card:
        return set()
    highest = await repository.highest_counters(session, by_card)
    held = {
        (o.parsed.asn, o.parsed.offline_counter)
        for o in outcomes
        if o.parsed is not None and o.code in (ResultCode.gray, ResultCode.tac_invalid)
    }
    fills: set[tuple[str, int]] = set()
    for asn, items in by_card.items():
        items.sort(key=lambda o: o.parsed.offline_counter if o.parsed else 0)
        counters = {o.parsed.offline_counter for o in items if o.parsed}
        previous = highest.get(asn, -1)
        for o in items:
            assert o.parsed is not None  # noqa: S101
            counter = o.parsed.offline_counter
            if counter < previous:
                fills.add((asn, counter))
                continue
            # Walk the gap only as far as the items we keep: a counter may jump by 65535.
            c, kept = previous + 1, 0
            while c < counter and kept < MAX_GAP_ITEMS:
                if c not in counters and (asn, c) not in held:
                    gap = f"counters {previous + 1}..{counter - 1} not seen"
                    o.breaks.append((BreakKind.counter_gap, c, gap))
                    kept += 1
                c += 1
            previous = counter
    return fills


def _record_row(
    o: Outcome, batch_id: int, terminal: TerminalContext, clearing_date: date, now: datetime
) -> dict[str, Any]:
    p = o.parsed
    code = o.code or ResultCode.invalid_data
    return {
        "batch_id": batch_id,
        "position": o.index,
        "result_code": code.value,
        "detail": (o.detail or None) and str(o.detail)[:200],
        "merchant_id": terminal.merchant_id,
        "uploading_terminal_id": terminal.terminal_id,
        "asn": p.asn if p else None,
        "card_id": o.card_id,
        "card_type": p.card_type if p else None,
        "tx_type": p.tx_type if p else None,
        "offline_counter": p.offline_counter if p else None,
        "balance_before": p.balance_before if p else None,
        "amount": p.amount if p else None,
        "fare": p.fare if p else None,
        "terminal_no": p.terminal_no if p else None,
        "psam_no": terminal.psam_no if p else None,
        "terminal_serial": p.terminal_serial if p else None,
        "tx_datetime": p.tx_datetime if p else None,
        "tx_time": p.tx_time if p else None,
        "key_version": p.key_version if p else None,
        "tac": p.tac if p else None,
        "gray": bool(p.gray) if p else False,
        "blacklisted": o.blacklisted,
        "compound": p.compound if p else None,
        # Accepted records are fully described by their columns; refused ones keep what came.
        "raw": None
        if code is ResultCode.accepted
        else (o.raw if isinstance(o.raw, dict) else {"value": o.raw}),
        "clearing_date": clearing_date,
        "received_at": now,
    }


async def _post_batch(
    session: AsyncSession,
    request: UploadRequest,
    terminal: TerminalContext,
    batch_id: int,
    accepted: Sequence[Outcome],
    clearing_date: date,
) -> int | None:
    """ONE posting per upload: card floats debited, the operator's pending clearing credited."""
    per_card: dict[str, int] = defaultdict(int)
    for o in accepted:
        if o.parsed is not None and o.card_no is not None and o.parsed.amount > 0:
            per_card[o.card_no] += o.parsed.amount
    total = sum(per_card.values())
    if total == 0:
        return None
    shortfall: dict[str, int] = {}
    for _attempt in range(2):
        entries = []
        short_total = 0
        for card_no, amount in sorted(per_card.items()):
            short = min(shortfall.get(card_no, 0), amount)
            if amount - short > 0:
                entries.append(
                    Entry(AccountRef(AccountKind.card_float, card_no), Side.debit, amount - short)
                )
            short_total += short
        if short_total:
            # The card paid (its TAC proves it) but the float is short: suspense, investigated
            # later (reference/settlement_hsm.md §1.5 "short balance").
            entries.append(Entry(AccountRef(AccountKind.suspense_short), Side.debit, short_total))
        entries.append(
            Entry(
                AccountRef(AccountKind.merchant_pending, terminal.merchant_no), Side.credit, total
            )
        )
        posting = PostingRequest(
            idempotency_key=f"upload:{terminal.terminal_no}:{request.batch_no}",
            tx_type="purchase_batch",
            clearing_date=clearing_date,
            entries=entries,
            record_ref=f"upload_batch:{batch_id}",
            description=f"offline upload {request.batch_no} of terminal {terminal.terminal_no}",
        )
        try:
            return (await ledger.post(session, posting)).id
        except InsufficientFunds:
            if shortfall:
                raise
            # Slow path, only when some float is short: look at the cards of this batch.
            for card_no, amount in per_card.items():
                available = await ledger.available(
                    session, AccountRef(AccountKind.card_float, card_no)
                )
                if available < amount:
                    shortfall[card_no] = amount - max(available, 0)
    raise AssertionError("unreachable")  # pragma: no cover


def _break(
    kind: BreakKind,
    counter: int | None,
    detail: str,
    subject: TacFields | Parsed,
    record_id: int,
    clearing_date: date,
) -> NewBreak:
    return NewBreak(
        kind=kind,
        clearing_date=clearing_date,
        reason=detail[:200],
        # What a missing counter was worth is unknown until its record comes.
        amount=None if kind is BreakKind.counter_gap else subject.amount,
        ref=BreakRef(
            source="offline_record",
            source_id=record_id,
            asn=subject.asn,
            counter=counter,
            terminal_no=subject.terminal_no,
        ),
        # One break per payment the chip made, however often a terminal sends its record.
        open_key=(
            f"refused_paid:{subject.terminal_no}:{subject.terminal_serial}:{subject.asn}"
            if kind is BreakKind.refused_paid
            else None
        ),
    )


async def _store(
    session: AsyncSession,
    request: UploadRequest,
    terminal: TerminalContext,
    outcomes: Sequence[Outcome],
    digest: str,
    clearing_date: date,
    gap_fills: set[tuple[str, int]],
    now: datetime,
) -> UploadResponse:
    accepted = [o for o in outcomes if o.code is ResultCode.accepted]
    accepted_amount = sum(o.parsed.amount for o in accepted if o.parsed)
    batch_id = await repository.insert_batch(
        session,
        {
            "terminal_id": terminal.terminal_id,
            "merchant_id": terminal.merchant_id,
            "batch_no": request.batch_no,
            "content_hash": digest,
            "record_count": request.record_count,
            "total_amount": request.total_amount,
            "accepted_count": len(accepted),
            "accepted_amount": accepted_amount,
            "refused_count": len(outcomes) - len(accepted),
            "refused_amount": request.total_amount - accepted_amount,
            "clearing_date": clearing_date,
            "ledger_transaction_id": None,
            "blacklist_version": request.blacklist_version,
            "params_version": request.params_version,
            "response": {},
            "received_at": now,
        },
    )
    ids = await repository.insert_records(
        session,
        [_record_row(o, batch_id, terminal, clearing_date, now) for o in outcomes],
        want_ids=any(o.breaks for o in outcomes),
    )
    await breaks.open_breaks(
        session,
        [
            _break(kind, counter, detail, subject, ids[o.index], clearing_date)
            for o in outcomes
            if (subject := o.subject()) is not None
            for kind, counter, detail in o.breaks
        ],
    )
    if gap_fills:
        await breaks.resolve_at(session, BreakKind.counter_gap, gap_fills, GAP_FILLED)
    transaction_id = await _post_batch(
        session, request, terminal, batch_id, accepted, clearing_date
    )
    response = UploadResponse(
        batch_no=request.batch_no,
        upload_id=batch_id,
        clearing_date=clearing_date,
        record_count=request.record_count,
        accepted_count=len(accepted),
        accepted_amount=accepted_amount,
        refused_count=len(outcomes) - len(accepted),
        refused_amount=request.total_amount - accepted_amount,
        ledger_transaction_id=transaction_id,
        results=[
            RecordResult(
                index=o.index,
                code=(o.code or ResultCode.invalid_data).value,
                blacklisted=o.blacklisted,
                detail=o.detail,
            )
            for o in outcomes
        ],
    )
    await repository.finish_batch(
        session, batch_id, transaction_id, response.model_dump(mode="json")
    )
    return response
