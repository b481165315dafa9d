"""The daily reconciliation with each biller (docs/bills.md §11, docs/biller-protocol.md §8).

After the day cut closes D, each biller gets one file for D: the payments whose success was
posted on D and the refunds made on D. The file is built in one transaction that also reads the
day's movement of the biller's payable in the ledger: when the two differ the file is never
sent (status ``unbalanced``, a break). A balanced file is sent through the signing adapter with
no database transaction open, idempotency key ``recon:<D>:<attempt>``, and the answer is
recorded in a transaction of its own: ``agree``, or one break per disagreement. A send that gets
no answer is tried again with backoff. Services never commit: the units of work here do, each
short, and nothing is held while the biller works.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.bills import service as bills
from cardsvc.bills.adapter import Answer, BillerClient, BillerEndpoint, NoAnswer
from cardsvc.bills.models import Biller
from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.breaks.schemas import BreakRef, NewBreak, Resolve
from cardsvc.db import unit_of_work
from cardsvc.errors import InvalidStateTransition, NotFound
from cardsvc.hsm import HsmUnavailable
from cardsvc.logging import get_logger
from settlement.billers import service as billers
from settlement.billrecon import files, repository
from settlement.billrecon.models import BillReconciliation, ReconStatus

log = get_logger(__name__)

PATH = "/bills/reconciliation"
FIRST_BACKOFF_SECONDS = 60
MAX_BACKOFF_SECONDS = 3600
MAX_ITEMS = 10_000
KINDS = ("only_channel", "only_biller", "amount_differs", "status_differs")
SOURCE = "bill_payment"
RESOLVER = "system:bill-reconciliation"


def backoff(attempts: int) -> timedelta:
    """60 s after the first failed send, doubling, at most an hour apart."""
    seconds = FIRST_BACKOFF_SECONDS * 2 ** max(attempts - 1, 0)
    return timedelta(seconds=min(seconds, MAX_BACKOFF_SECONDS))


def idempotency_key(day: date, attempt: int) -> str:
    return f"recon:{day.isoformat()}:{attempt}"


def item_key(day: date, code: str, kind: str, serial: str) -> str:
    return f"bill_recon:{day.isoformat()}:{code}:{kind}:{serial}"


def unbalanced_key(day: date, code: str) -> str:
    return f"bill_recon_unbalanced:{day.isoformat()}:{code}"


# --- building ------------------------------------------------------------------------------


async def build(
    session: AsyncSession, channel: str, day: date, biller: Biller
) -> BillReconciliation:
    """The biller's file of ``day`` (a new row, or the unbalanced one built again), with the
    ledger's movement of its payable read in the same transaction; a file whose totals are not
    the ledger's is kept ``unbalanced`` and opens a break instead of being sent."""
    found = await repository.get(session, day, biller.code, for_update=True)
    if found is not None and found.status is not ReconStatus.unbalanced:
        return found
    lines = await repository.day_lines(session, biller.code, day)
    built = files.build([d.line for d in lines])
    # Read back before it can go anywhere: the bytes say what the lines say.
    files.parse(built.data)
    ledger_count, ledger_total = await billers.biller_movement(session, day, biller.code)
    balanced = (built.count, built.total) == (ledger_count, ledger_total)
    now = clock.now()
    row = found or BillReconciliation(
        clearing_date=day, biller_code=biller.code, attempts=0, disagreements=0, created_at=now
    )
    row.file_name = files.file_name(channel, biller.code, day)
    row.file_text, row.file_sha256 = built.text, built.sha256
    row.count, row.total = built.count, built.total
    row.ledger_count, row.ledger_total = ledger_count, ledger_total
    row.status = ReconStatus.sending if balanced else ReconStatus.unbalanced
    row.next_attempt_at = now if balanced else None
    row.last_error = None if balanced else "the file's totals are not the ledger's"
    row.updated_at = now
    if found is None:
        repository.add(session, row)
    await session.flush()
    if balanced:
        await breaks.resolve_by_key(
            session,
            unbalanced_key(day, biller.code),
            Resolve(resolver=RESOLVER, resolution="rebuilt_balanced",
                    note="the file was built again and equals the ledger"),
        )  # fmt: skip
    else:
        await breaks.open_break(
            session,
            NewBreak(
                kind=BreakKind.biller_file_unbalanced,
                clearing_date=day,
                reason=(
                    f"biller {biller.code}: the file holds {built.count} line(s), {built.total} "
                    f"fen; the payable moved {ledger_count} time(s), {ledger_total} fen"
                )[:200],
                ref=BreakRef(source="bill_reconciliation", source_id=row.id,
                             reference=row.file_name),
                amount=abs(built.total - ledger_total),
                open_key=unbalanced_key(day, biller.code),
            ),
        )  # fmt: skip
        log.warning("bills.reconciliation_unbalanced", biller=biller.code, day=day.isoformat())
    return row


# --- sending and recording -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    biller_code: str
    day: date
    status: ReconStatus
    detail: str


def _payload(row: BillReconciliation) -> dict[str, Any]:
    return {
        "date": row.clearing_date.isoformat(),
        "file_name": row.file_name,
        "count": row.count,
        "sum": row.total,
        "sha256": row.file_sha256,
        "file": row.file_text,
    }


async def send(
    sessions: async_sessionmaker[AsyncSession], client: BillerClient, day: date, code: str
) -> Sent:
    """Send the biller's file of ``day`` once and record what came back."""
    async with sessions() as reading:
        row = await repository.get(reading, day, code)
        if row is None:
            raise NotFound(f"no reconciliation of biller {code} for {day}")
        biller = await bills.get_biller(reading, code)
        if row.status is ReconStatus.unbalanced:
            return Sent(code, day, row.status, row.last_error or "unbalanced")
        attempt = row.attempts + 1
        payload = _payload(row)
        endpoint = BillerEndpoint(biller.code, biller.endpoint, biller.key_label)
    outcome: Answer | str
    try:
        outcome = await client.call(endpoint, PATH, idempotency_key(day, attempt), payload)
    except NoAnswer as exc:
        outcome = f"no answer: {exc.reason}"
    except HsmUnavailable:
        outcome = "no answer: the HSM is unavailable"
    async with unit_of_work(sessions) as session:
        return await _record(session, day, code, attempt, outcome)


def _problem(answer: Answer, day: date) -> str | None:
    """Why a signed answer is not an answer to this file (then it is tried again)."""
    body = answer.body
    if answer.status != 200:
        return f"refused: {answer.status} {str(body.get('error', ''))[:40]}"
    if body.get("date") != day.isoformat():
        return "the answer names another date"
    if body.get("result") == "agree":
        return None
    if body.get("result") != "disagree":
        return "the answer is neither agree nor disagree"
    items = body.get("items")
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        return f"a disagreement lists 1 to {MAX_ITEMS} items"
    for item in items:
        if (
            not isinstance(item, dict)
            or item.get("kind") not in KINDS
            or not isinstance(item.get("serial"), str)
            or not files.SERIAL.match(item["serial"])
        ):
            return "a disagreement item is malformed"
        for name in ("channel_amount", "biller_amount"):
            value = item.get(name)
            if value is not None and (type(value) is not int or not 0 <= value <= 10**12):
                return f"a disagreement's {name} is malformed"
    return None


async def _record(
    session: AsyncSession, day: date, code: str, attempt: int, outcome: Answer | str
) -> Sent:
    row = await repository.get(session, day, code, for_update=True)
    if row is None:  # pragma: no cover - rows are never deleted
        raise NotFound(f"no reconciliation of biller {code} for {day}")
    now = clock.now()
    if row.attempts >= attempt:  # another sender recorded this attempt first
        return Sent(code, day, row.status, "recorded by another sender")
    row.attempts, row.sent_at, row.updated_at = attempt, now, now
    problem = outcome if isinstance(outcome, str) else _problem(outcome, day)
    if problem is not None or isinstance(outcome, str):
        row.last_error = str(problem)[:255]
        row.next_attempt_at = now + backoff(attempt)
        log.info("bills.reconciliation_retry", biller=code, day=day.isoformat(), attempt=attempt)
        return Sent(code, day, row.status, row.last_error)
    body = outcome.body
    items: list[dict[str, Any]] = list(body.get("items", []))
    before = _items_of(row.answer, code)
    row.answer = json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    row.answered_at, row.next_attempt_at, row.last_error = now, None, None
    row.disagreements = len(items)
    row.status = ReconStatus.disagreed if items else ReconStatus.agreed
    await session.flush()
    await _open_breaks(session, row, items)
    # A disagreement of an earlier answer that this one no longer lists is settled.
    now_keys = {item_key(day, code, i["kind"], i["serial"]) for i in items}
    gone = 0
    for key in sorted(set(before) - now_keys):
        gone += await breaks.resolve_by_key(
            session, key, Resolve(resolver=RESOLVER, resolution="biller_agrees",
                                  note=f"the biller's answer to attempt {attempt} agrees")
        )  # fmt: skip
    detail = f"{row.status.value}: {len(items)} disagreement(s)"
    if gone:
        detail += f", {gone} closed"
    return Sent(code, day, row.status, detail)


def _items_of(answer: str | None, code: str) -> list[str]:
    """The break keys of the disagreements of a recorded answer."""
    if not answer:
        return []
    body = json.loads(answer)
    day = date.fromisoformat(body["date"])
    return [item_key(day, code, i["kind"], i["serial"]) for i in body.get("items", [])]


async def _open_breaks(
    session: AsyncSession, row: BillReconciliation, items: list[dict[str, Any]]
) -> None:
    """One break per disagreement; one already opened by an earlier answer stays as it is."""
    if not items:
        return
    ours = {ln.serial: ln for ln in files.parse(row.file_text.encode()).lines}
    known = await repository.payments_by_serial(
        session, row.biller_code, [i["serial"] for i in items]
    )
    opened = []
    for item in items:
        serial, kind = item["serial"], item["kind"]
        line = ours.get(serial)
        payment = known.get(serial)
        bill_key = (
            line.bill_key if line else str(item.get("bill_key") or (payment[1] if payment else ""))
        )
        channel_amount = item.get("channel_amount", line.amount if line else None)
        biller_amount = item.get("biller_amount")
        amount = _amount(kind, channel_amount, biller_amount)
        reason = (
            f"{kind}: biller {row.biller_code}, bill {bill_key or '?'}, serial {serial}: "
            f"ours {'-' if channel_amount is None else channel_amount} fen, the biller's "
            f"{'-' if biller_amount is None else biller_amount} fen"
            + (f" ({item['biller_status']})" if isinstance(item.get("biller_status"), str) else "")
        )
        opened.append(
            NewBreak(
                kind=BreakKind.biller_disagreement,
                clearing_date=row.clearing_date,
                reason=reason[:200],
                ref=BreakRef(source=SOURCE, source_id=payment[0] if payment else None,
                             reference=serial),
                amount=amount,
                open_key=item_key(row.clearing_date, row.biller_code, kind, serial),
            )
        )  # fmt: skip
    await breaks.open_breaks(session, opened)


def _amount(kind: str, ours: int | None, theirs: int | None) -> int | None:
    if kind == "amount_differs" and ours is not None and theirs is not None:
        return abs(ours - theirs)
    if kind == "only_biller":
        return theirs
    return ours


# --- the day's runs ------------------------------------------------------------------------


async def reconcile(
    sessions: async_sessionmaker[AsyncSession],
    client: BillerClient,
    channel: str,
    day: date,
    code: str | None = None,
) -> list[Sent]:
    """Build (or build again, if unbalanced) and send now the file of ``day`` of every biller
    (or one): the command's run. A day not closed yet is refused (NotFound)."""
    async with sessions() as reading:
        if not await _closed(reading, day):
            raise NotFound(f"clearing day {day} is not closed yet: its file is not complete")
        targets = (
            [await bills.get_biller(reading, code)]
            if code
            else await bills.list_billers(reading, status=None)
        )
        codes = [b.code for b in targets]
    out = []
    for one in codes:
        async with unit_of_work(sessions) as session:
            biller = await bills.get_biller(session, one)
            row = await build(session, channel, day, biller)
            status = row.status
        if status is ReconStatus.unbalanced:
            out.append(Sent(one, day, status, "the file's totals are not the ledger's: not sent"))
            continue
        out.append(await send(sessions, client, day, one))
    return out


async def _closed(session: AsyncSession, day: date) -> bool:
    return await repository.day_closed(session, day)


BUILD_PAGE = 100


async def run_due(
    sessions: async_sessionmaker[AsyncSession], client: BillerClient, channel: str, now: datetime
) -> Mapping[str, int]:
    """The worker's pass: build the files of closed days that have none, then send every file
    whose next attempt is due. Counts by outcome."""
    counts: dict[str, int] = {}
    async with sessions() as reading:
        pending = await repository.to_build(reading, BUILD_PAGE)
    for day, code in pending:
        async with unit_of_work(sessions) as session:
            row = await build(session, channel, day, await bills.get_biller(session, code))
            if row.status is ReconStatus.unbalanced:
                counts["unbalanced"] = counts.get("unbalanced", 0) + 1
    async with sessions() as reading:
        due = await repository.due(reading, now, BUILD_PAGE)
    for day, code in due:
        sent = await send(sessions, client, day, code)
        name = sent.status.value if sent.status is not ReconStatus.sending else "retrying"
        counts[name] = counts.get(name, 0) + 1
    return counts


async def resend(session: AsyncSession, day: date, code: str, *, actor: str) -> BillReconciliation:
    """Finance's request to send an answered file again (the biller corrected its side, or
    finance settled a disagreement and wants the biller's word on it): the file goes back to
    ``sending``, due at once, and the job sends it on its next pass with the next attempt's key;
    the biller's fresh answer then opens or closes breaks as any answer does. A file still being
    sent is left as it is; an unbalanced one is refused (it is built again by ``cardsvc bill-recon
    run`` once its cause is fixed)."""
    row = await repository.get(session, day, code, for_update=True)
    if row is None:
        raise NotFound(f"no reconciliation of biller {code} for {day}")
    if row.status is ReconStatus.unbalanced:
        raise InvalidStateTransition(
            f"the file of biller {code} for {day} is not the ledger's: it is never sent"
        )
    if row.status is ReconStatus.sending:
        return row
    before, now = row.status, clock.now()
    row.status, row.next_attempt_at, row.last_error, row.updated_at = (
        ReconStatus.sending, now, None, now
    )  # fmt: skip
    await session.flush()
    await audit.record(
        session, actor=actor, action="bills.recon_resend", entity="bill_reconciliation",
        entity_id=f"{day.isoformat()}:{code}", before={"status": before.value},
        after={"status": row.status.value},
    )  # fmt: skip
    return row


# --- what finance sees ---------------------------------------------------------------------


async def day_status(session: AsyncSession, day: date) -> list[BillReconciliation]:
    return await repository.of_day(session, day)


async def latest(session: AsyncSession, limit: int = 100) -> list[BillReconciliation]:
    return await repository.latest(session, limit)


async def one(session: AsyncSession, day: date, code: str) -> BillReconciliation:
    row = await repository.get(session, day, code)
    if row is None:
        raise NotFound(f"no reconciliation of biller {code} for {day}")
    return row
