"""Bank top-ups of online accounts (DESIGN §15, docs/bank-credits.md).

A bank tells us of money it received for a resident, either at once (a *credit notification*, a
signed JSON message) or in a batch (a *credit file* of the day's credits, signed the same way).
Either is signed by the bank with HMAC-SHA256 under its key, which the HSM holds as
``BANK_<code>`` (usage ``bank-mac``, verify only: this host can check a bank's signature but never
make one). The signature is verified before anything is parsed or written.

Each credit is matched by the account reference the payer wrote (cardsvc/accounts/reference.py):
one that is well formed, has valid check digits and names an account is booked to it (``bank →
resident_account``); anything else goes to suspense (``bank → suspense_bank``) with a break item,
never to a guessed account. Finance moves a suspense credit to an account later, one person
proposing and another approving. The bank's own reference of a credit is its retry key: a
replayed notification, or a file that repeats a notified credit, books nothing twice.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from dataclasses import dataclass, field

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc import clock
from cardsvc.accounts import service as accounts
from cardsvc.audit import service as audit
from cardsvc.bank import repository as repo
from cardsvc.bank.models import BankCredit, CreditSource, CreditStatus
from cardsvc.bank.schemas import CreditIn
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.breaks.schemas import BreakRef, NewBreak, Resolve
from cardsvc.clearing.service import clearing_date as clearing_date_of
from cardsvc.errors import (
    DependencyUnavailable,
    DomainError,
    Forbidden,
    IdempotencyConflict,
    InvalidStateTransition,
    NotFound,
    ValidationFailed,
)
from cardsvc.hsm import HsmClient, HsmError, HsmUnavailable, KeyRef
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.residents.idnumber import mask_name
from cardsvc.settings import Settings

FILE_HEADER = ("bank_reference", "account_reference", "amount", "value_date", "payer_name")
MAX_FILE_PROBLEMS = 20
MAX_PAGE = 500
_AMOUNT = re.compile(r"^[1-9][0-9]{0,10}$")
_SIGNATURE = re.compile(r"^[0-9A-Fa-f]{64}$")


class SignatureInvalid(DomainError):
    """The bank's signature is missing, malformed or wrong, or the bank is not one we accept."""

    status_code = 401


def bank_account(bank_code: str) -> AccountRef:
    return AccountRef(AccountKind.bank, bank_code)


def bank_suspense(bank_code: str) -> AccountRef:
    return AccountRef(AccountKind.suspense_bank, bank_code)


def bank_key(bank_code: str) -> KeyRef:
    return KeyRef.label(f"BANK_{bank_code}")


async def verify_signature(
    hsm: HsmClient, settings: Settings, bank_code: str, body: bytes, signature: str | None
) -> None:
    """Refuse (401) unless ``signature`` is the bank's HMAC-SHA256 of these exact bytes."""
    if bank_code not in settings.bank_codes:
        raise SignatureInvalid("unknown bank, or a bad signature")
    if signature is None or not _SIGNATURE.match(signature):
        raise SignatureInvalid("X-Bank-Signature must be 64 hex digits (HMAC-SHA256)")
    try:
        valid = await hsm.mac_verify(bank_key(bank_code), body, bytes.fromhex(signature))
    except HsmUnavailable as exc:
        raise DependencyUnavailable("HSM unavailable") from exc
    except HsmError as exc:  # the bank's key is missing from the HSM: as a bad signature
        raise SignatureInvalid("unknown bank, or a bad signature") from exc
    if not valid:
        raise SignatureInvalid("unknown bank, or a bad signature")


def _hash(credit: CreditIn) -> str:
    body = json.dumps(
        [credit.account_reference, credit.amount, credit.value_date.isoformat(), credit.currency],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CreditOutcome:
    credit: BankCredit | None  # None only for a conflict of a file line
    replayed: bool = False
    conflict: bool = False


async def receive(
    session: AsyncSession,
    settings: Settings,
    bank_code: str,
    credit: CreditIn,
    source: CreditSource,
) -> CreditOutcome:
    """Book one credit (signature verified by the caller): to the account its reference names,
    else to suspense with a break. A repeat of the bank reference answers the first booking; one
    with other content is a conflict (``IdempotencyConflict`` for a notification; a file line is
    reported and a break opened, the rest of the file goes on)."""
    digest = _hash(credit)
    existing = await repo.by_reference(session, bank_code, credit.bank_reference)
    if existing is None:
        clearing_date = await clearing_date_of(session, settings)
        account = await accounts.find_by_reference(session, credit.account_reference)
        row = await repo.claim(
            session,
            {
                "bank_code": bank_code,
                "bank_reference": credit.bank_reference,
                "request_hash": digest,
                "source": source,
                "account_reference_given": credit.account_reference,
                "account_id": account.id if account else None,
                "amount": credit.amount,
                "value_date": credit.value_date,
                "payer_masked": mask_name(credit.payer_name) if credit.payer_name else "",
                "status": CreditStatus.posted if account else CreditStatus.suspense,
                "clearing_date": clearing_date,
                "created_at": clock.now(),
            },
        )
        if row is not None:
            await _book(session, row, account.resident_id if account else None)
            return CreditOutcome(row)
        existing = await repo.by_reference(session, bank_code, credit.bank_reference)
        assert existing is not None  # noqa: S101 - the conflicting row exists
    if existing.request_hash == digest:
        return CreditOutcome(existing, replayed=True)
    if source is CreditSource.notification:
        raise IdempotencyConflict(
            f"bank reference {credit.bank_reference} was used for another credit"
        )
    await breaks.open_break(
        session,
        NewBreak(
            kind=BreakKind.bank_credit_conflict,
            clearing_date=await clearing_date_of(session, settings),
            reason="the bank's file repeats a reference with other content; nothing booked",
            ref=BreakRef(source="bank_credit", source_id=existing.id, reference=_ref(existing)),
            amount=credit.amount,
            open_key=f"bank-credit-conflict:{bank_code}:{credit.bank_reference}:{digest[:16]}",
        ),
    )
    return CreditOutcome(None, conflict=True)


def _ref(row: BankCredit) -> str:
    return f"{row.bank_code}:{row.bank_reference}"


async def _book(session: AsyncSession, row: BankCredit, resident_id: int | None) -> None:
    target = (
        accounts.ledger_account(resident_id)
        if resident_id is not None
        else bank_suspense(row.bank_code)
    )
    posted = await ledger.post(
        session,
        PostingRequest(
            idempotency_key=f"bank-credit:{row.bank_code}:{row.bank_reference}",
            tx_type="bank_credit" if resident_id is not None else "bank_credit_suspense",
            clearing_date=row.clearing_date,
            entries=[
                Entry(bank_account(row.bank_code), Side.debit, row.amount),
                Entry(target, Side.credit, row.amount),
            ],
            record_ref=f"bank_credit:{row.id}",
            description=f"bank credit {row.bank_code} {row.bank_reference}",
        ),
    )
    row.ledger_transaction_id = posted.id
    if resident_id is None:
        row.break_id = await breaks.open_break(
            session,
            NewBreak(
                kind=BreakKind.unmatched_bank_credit,
                clearing_date=row.clearing_date,
                reason="the account reference the payer wrote names no account",
                ref=BreakRef(source="bank_credit", source_id=row.id, reference=_ref(row)),
                amount=row.amount,
                open_key=f"bank-credit:{row.bank_code}:{row.bank_reference}",
            ),
        )
    await session.flush()


# --- credit files ---------------------------------------------------------------------------


@dataclass
class FileResult:
    bank_code: str
    lines: list[tuple[int, str, str, int | None]] = field(default_factory=list)
    amount_posted: int = 0
    amount_suspense: int = 0

    def count(self, status: str) -> int:
        return sum(1 for line in self.lines if line[2] == status)


def parse_file(content: bytes, max_lines: int) -> list[tuple[int, CreditIn]]:
    """The credits of a credit file, or ValidationFailed naming every bad line (nothing is
    booked from a file with one): UTF-8 (a BOM is allowed) CSV with the header of FILE_HEADER,
    amounts as integer fen, dates as YYYY-MM-DD, each bank reference once."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(f"the file is not UTF-8 (byte {exc.start})") from None
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or tuple(cell.strip() for cell in rows[0]) != FILE_HEADER:
        raise ValidationFailed(f"the first line must be the header {','.join(FILE_HEADER)}")
    body = [
        (n, cells) for n, cells in enumerate(rows[1:], start=2) if any(c.strip() for c in cells)
    ]
    if not body:
        raise ValidationFailed("the file holds no credit")
    if len(body) > max_lines:
        raise ValidationFailed(f"at most {max_lines} credits per file")
    problems: list[str] = []
    found: list[tuple[int, CreditIn]] = []
    seen: dict[str, int] = {}
    for number, cells in body:
        if len(cells) != len(FILE_HEADER):
            problems.append(f"line {number}: {len(cells)} fields, not {len(FILE_HEADER)}")
            continue
        values = dict(zip(FILE_HEADER, (c.strip() for c in cells), strict=True))
        if not _AMOUNT.match(values["amount"]):
            problems.append(f"line {number}: amount must be a positive integer of fen")
            continue
        try:
            credit = CreditIn.model_validate({**values, "amount": int(values["amount"])})
        except ValidationError as exc:
            names = sorted({str(e["loc"][0]) for e in exc.errors(include_input=False)})
            problems.append(f"line {number}: invalid {', '.join(names)}")
            continue
        first = seen.setdefault(credit.bank_reference, number)
        if first != number:
            problems.append(f"line {number}: repeats the bank reference of line {first}")
            continue
        found.append((number, credit))
    if problems:
        shown = "; ".join(problems[:MAX_FILE_PROBLEMS])
        more = len(problems) - MAX_FILE_PROBLEMS
        raise ValidationFailed(shown + (f" (and {more} more)" if more > 0 else ""))
    return found


async def import_file(
    session: AsyncSession, settings: Settings, bank_code: str, content: bytes, *, actor: str
) -> FileResult:
    """Book every credit of a verified credit file (all or nothing when it does not parse)."""
    credits = parse_file(content, settings.bank_credit_file_max_lines)
    result = FileResult(bank_code)
    for number, credit in credits:
        outcome = await receive(session, settings, bank_code, credit, CreditSource.file)
        if outcome.conflict or outcome.credit is None:
            result.lines.append((number, credit.bank_reference, "conflict", None))
            continue
        row = outcome.credit
        status = "replayed" if outcome.replayed else row.status.value
        if status == "posted":
            result.amount_posted += row.amount
        elif status == "suspense":
            result.amount_suspense += row.amount
        result.lines.append((number, credit.bank_reference, status, row.id))
    await audit.record(
        session,
        actor=actor,
        action="bank.credit_file",
        entity="bank",
        entity_id=bank_code,
        after={
            "lines": len(result.lines),
            "posted": result.count("posted"),
            "suspense": result.count("suspense"),
            "replayed": result.count("replayed"),
            "conflicts": result.count("conflict"),
            "digest": hashlib.sha256(content).hexdigest(),
        },
    )
    return result


# --- suspense -------------------------------------------------------------------------------


async def get(session: AsyncSession, credit_id: int, *, for_update: bool = False) -> BankCredit:
    row = await repo.get(session, credit_id, for_update=for_update)
    if row is None:
        raise NotFound(f"no bank credit {credit_id}")
    return row


async def listing(
    session: AsyncSession, *, status: CreditStatus | None, after_id: int, limit: int
) -> list[BankCredit]:
    return await repo.listing(
        session, status=status, after_id=after_id, limit=max(1, min(limit, MAX_PAGE))
    )


async def references(session: AsyncSession, *account_ids: int | None) -> dict[int, str]:
    """The references of these accounts (for showing a credit to finance)."""
    found: dict[int, str] = {}
    for account_id in {a for a in account_ids if a is not None}:
        account = await accounts.by_id(session, account_id)
        if account is not None and account.reference is not None:
            found[account_id] = account.reference
    return found


async def propose(
    session: AsyncSession, credit_id: int, reference: str, *, actor: str
) -> BankCredit:
    """Finance proposes the account a suspense credit belongs to (a second person approves)."""
    row = await get(session, credit_id, for_update=True)
    if row.status is not CreditStatus.suspense:
        raise InvalidStateTransition(
            f"bank credit {credit_id} is {row.status.value}, not in suspense"
        )
    account = await accounts.by_reference(session, reference)
    row.proposed_account_id, row.proposed_by = account.id, actor
    await session.flush()
    await audit.record(
        session, actor=actor, action="bank.suspense_propose", entity="bank_credit",
        entity_id=str(row.id), after={"account": account.reference, "amount": row.amount},
    )  # fmt: skip
    return row


async def approve(
    session: AsyncSession, settings: Settings, credit_id: int, *, actor: str
) -> BankCredit:
    """A second person moves the suspense credit to the proposed account and closes its break."""
    row = await get(session, credit_id, for_update=True)
    if row.status is not CreditStatus.suspense or row.proposed_account_id is None:
        raise InvalidStateTransition(f"bank credit {credit_id} has no proposal to approve")
    if actor == row.proposed_by:
        raise Forbidden("a suspense credit is moved by a second person, not its proposer")
    account = await accounts.by_id(session, row.proposed_account_id)
    assert account is not None  # noqa: S101 - accounts are never deleted
    posted = await ledger.post(
        session,
        PostingRequest(
            idempotency_key=f"bank-assign:{row.id}",
            tx_type="bank_suspense_assign",
            clearing_date=await clearing_date_of(session, settings),
            entries=[
                Entry(bank_suspense(row.bank_code), Side.debit, row.amount),
                Entry(accounts.ledger_account(account.resident_id), Side.credit, row.amount),
            ],
            record_ref=f"bank_credit:{row.id}",
            description=f"bank credit {row.bank_code} {row.bank_reference} out of suspense",
        ),
    )
    now = clock.now()
    row.status, row.account_id = CreditStatus.assigned, account.id
    row.assigned_by, row.assign_transaction_id, row.resolved_at = actor, posted.id, now
    if row.break_id is not None:
        await breaks.resolve(
            session,
            row.break_id,
            Resolve(
                resolver=actor,
                resolution="assigned",
                note=f"to account {account.reference}, proposed by {row.proposed_by}",
            ),
        )
    await session.flush()
    await audit.record(
        session, actor=actor, action="bank.suspense_assign", entity="bank_credit",
        entity_id=str(row.id), after={"account": account.reference, "amount": row.amount},
    )  # fmt: skip
    return row
