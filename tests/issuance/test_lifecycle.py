"""Card lifecycle (DESIGN §8): loss, blacklist, replacement, balance move, refusals, PII at rest."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from cardsvc import clock
from cardsvc.audit import service as audit
from cardsvc.blacklist import service as blacklist
from cardsvc.cards.numbers import make_card_no
from cardsvc.cards.tasks import release_balances
from cardsvc.db import read_sessions, unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from cardsvc.staff.auth import Role
from terminals.devices.card import make_blank_card
from tests.factories import resident_id, staff_headers
from tests.issuance.flow import personalize_card, register_and_apply

NAME = "欧阳娜娜"


async def _issue(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
    rid: str,
    serial: str,
) -> tuple[int, str]:
    resident, application, card_no = await register_and_apply(
        client, operator, supervisor, resident_id=rid, name=NAME
    )
    with InProcessLink(make_blank_card(bytes.fromhex(serial))) as link:
        await personalize_card(resources, link, application)
    r = await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
    assert r.status_code == 200, r.text
    return resident, card_no


async def test_loss_replacement_and_balance_move(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    rid = resident_id("320102", "19850615", "241")
    resident, old_no = await _issue(
        client, resources, operator, supervisor, rid, "0102030405060708"
    )
    async with unit_of_work(resources.sessions) as session:
        await ledger.post(session, PostingRequest("test-load:1", "load", date.today(), [
            Entry(AccountRef(AccountKind.counter_cash, "C01"), Side.debit, 5000),
            Entry(AccountRef(AccountKind.card_float, old_no), Side.credit, 5000),
        ]))  # fmt: skip
        version_before = await blacklist.current_version(session)
    # a second application while the card is active is refused
    r = await client.post("/api/v1/applications", json={"resident_id": resident}, headers=operator)
    assert r.status_code == 409
    r = await client.post(f"/api/v1/cards/{old_no}/loss", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["blacklist_version"] == version_before + 1
    async with resources.sessions() as session:
        assert await blacklist.is_blacklisted(session, old_no)
        version, entries = await blacklist.full_list(session)
        assert version == version_before + 1
        assert [e.asn for e in entries] == [old_no]
    r = await client.post(f"/api/v1/cards/{old_no}/replace", headers=operator)
    assert r.status_code == 200, r.text
    assert r.json()["card"]["status"] == "replaced"
    replacement = r.json()["replacement_application_id"]
    await client.post(f"/api/v1/applications/{replacement}/approve", headers=supervisor)
    r = await client.post(f"/api/v1/applications/{replacement}/production", headers=operator)
    new_no = r.json()["card_no"]
    assert new_no != old_no
    with InProcessLink(make_blank_card(bytes.fromhex("1112131415161718"))) as link:
        await personalize_card(resources, link, replacement)
    r = await client.post(f"/api/v1/applications/{replacement}/handover", headers=operator)
    assert r.json()["status"] == "active"
    # before the waiting period nothing moves; after it, exactly once
    assert (await release_balances(resources.sessions, resources.settings)).moved == 0
    later = clock.now() + timedelta(days=resources.settings.loss_waiting_period_days, minutes=1)
    report = await release_balances(resources.sessions, resources.settings, now=later)
    assert (report.moved, report.amount) == (1, 5000)
    assert (await release_balances(resources.sessions, resources.settings, now=later)).moved == 0
    async with resources.sessions() as session:
        assert await ledger.balance(session, AccountRef(AccountKind.card_float, old_no)) == 0
    reads = read_sessions(resources.engine)
    assert (await audit.verify(resources.sessions, reads, resources.hsm)).ok
    r = await client.get(f"/api/v1/cards/{old_no}", headers=operator)
    assert (r.json()["status"], r.json()["float_balance"]) == ("replaced", 0)
    # The new chip holds nothing yet: the balance waits for a transfer load at a counter.
    r = await client.get(f"/api/v1/cards/{new_no}", headers=operator)
    assert (r.json()["float_balance"], r.json()["balance_to_load"]) == (0, 5000)


async def test_refusals(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
) -> None:
    base = {"name": "张三", "phone": "13800000000", "address": "x"}
    good = resident_id()
    bad_check = good[:17] + ("0" if good[17] != "0" else "1")
    bad_date = resident_id(birth="19900230")
    bad_region = resident_id(region="991102")
    for rid in (bad_check, bad_date, bad_region, "12345"):
        r = await client.post(
            "/api/v1/residents", json={**base, "resident_id": rid}, headers=operator
        )
        assert r.status_code == 422, (rid, r.text)
    r = await client.post("/api/v1/residents", json={**base, "resident_id": good}, headers=operator)
    assert r.status_code == 201
    assert r.json()["resident_id"] != good
    assert r.json()["name"] == "张*"
    assert (
        await client.post("/api/v1/residents", json={**base, "resident_id": good}, headers=operator)
    ).status_code == 409
    resident = r.json()["id"]
    # a role without rights
    finance = await staff_headers(client, "fin", Role.finance)
    assert (
        await client.post("/api/v1/applications", json={"resident_id": resident}, headers=finance)
    ).status_code == 403
    # the same person cannot approve their own submission
    both = await staff_headers(client, "both", Role.counter_operator, Role.supervisor)
    r = await client.post("/api/v1/applications", json={"resident_id": resident}, headers=both)
    application = r.json()["id"]
    assert (
        await client.post(f"/api/v1/applications/{application}/approve", headers=both)
    ).status_code == 403
    assert (
        await client.post("/api/v1/applications", json={"resident_id": resident}, headers=operator)
    ).status_code == 409
    # illegal application transitions
    assert (
        await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
    ).status_code == 409
    assert (
        await client.post(f"/api/v1/applications/{application}/production", headers=operator)
    ).status_code == 409
    assert (
        await client.post(f"/api/v1/applications/{application}/approve", headers=supervisor)
    ).status_code == 200
    assert (
        await client.post(
            f"/api/v1/applications/{application}/reject", json={"reason": "x"}, headers=supervisor
        )
    ).status_code == 409
    r = await client.post(f"/api/v1/applications/{application}/production", headers=operator)
    card_no = r.json()["card_no"]
    # a well-formed number of no card: 404, by the lookup the CLI's ``cards show`` uses too
    unknown = make_card_no("3211", 10**11 - 1)
    r = await client.get(f"/api/v1/cards/{unknown}", headers=operator)
    assert (r.status_code, r.json()["detail"]) == (404, "no such card")
    r = await client.post(f"/api/v1/cards/{unknown}/loss", headers=operator)
    assert (r.status_code, r.json()["detail"]) == (404, "no such card")
    # a card still personalizing can do nothing
    for action in ("loss", "recover", "freeze", "unfreeze", "replace", "expire"):
        r = await client.post(f"/api/v1/cards/{card_no}/{action}", headers=supervisor)
        assert r.status_code == 409, (action, r.text)
    with InProcessLink(make_blank_card(bytes.fromhex("2122232425262728"))) as link:
        await personalize_card(resources, link, application)
    await client.post(f"/api/v1/applications/{application}/handover", headers=operator)
    # active: recover/unfreeze/replace are impossible
    for action in ("recover", "unfreeze", "replace"):
        r = await client.post(f"/api/v1/cards/{card_no}/{action}", headers=supervisor)
        assert r.status_code == 409, (action, r.text)
        assert "active" in r.json()["detail"], action
    assert (
        await client.post(f"/api/v1/cards/{card_no}/freeze", headers=operator)
    ).status_code == 403
    assert (
        await client.post(f"/api/v1/cards/{card_no}/freeze", headers=supervisor)
    ).status_code == 200
    for action in ("loss", "freeze", "replace", "expire"):
        assert (
            await client.post(f"/api/v1/cards/{card_no}/{action}", headers=supervisor)
        ).status_code == 409, action
    assert (
        await client.post(f"/api/v1/cards/{card_no}/unfreeze", headers=supervisor)
    ).status_code == 200
    assert (await client.post(f"/api/v1/cards/{card_no}/loss", headers=operator)).status_code == 200
    assert (
        await client.post(f"/api/v1/cards/{card_no}/recover", headers=operator)
    ).status_code == 200
    r = await client.post(
        f"/api/v1/cards/{card_no}/cancel", json={"refund_to": "resident_account"}, headers=operator
    )
    assert r.status_code == 200
    for action in ("loss", "recover", "freeze", "unfreeze", "replace", "expire"):
        assert (
            await client.post(f"/api/v1/cards/{card_no}/{action}", headers=supervisor)
        ).status_code == 409, action
    # a cancelled card's resident may apply again
    assert (
        await client.post("/api/v1/applications", json={"resident_id": resident}, headers=operator)
    ).status_code == 201
    auditor = await staff_headers(client, "aud", Role.auditor)
    assert (await client.get("/api/v1/audit/verify", headers=auditor)).json()["ok"] is True


async def test_no_clear_pii_at_rest(
    client: httpx.AsyncClient,
    resources: Resources,
    operator: dict[str, str],
    supervisor: dict[str, str],
    capfd: pytest.CaptureFixture[str],
) -> None:
    rid = resident_id("110105", "19491001", "007")
    await _issue(client, resources, operator, supervisor, rid, "3132333435363738")
    needles = [rid.encode(), NAME.encode("utf-8"), NAME.encode("gbk")]
    if resources.engine.dialect.name == "sqlite":
        path = Path(resources.settings.database_url.split("///", 1)[1])
        blob = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert blob  # the grep reads the database file, its WAL and shm
        for needle in needles:
            assert needle not in blob
    else:
        async with resources.engine.connect() as conn:
            columns = (await conn.execute(text(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND data_type IN ('text', 'character varying', 'bytea')"
            ))).all()  # fmt: skip
            for table, column in columns:
                query = f'SELECT "{column}"::text FROM "{table}"'  # noqa: S608 - names from the catalog
                rows = (await conn.execute(text(query))).scalars().all()
                for value in rows:
                    assert value is None or (rid not in value and NAME not in value), (
                        table,
                        column,
                    )
    out, err = capfd.readouterr()
    assert rid not in out + err
    assert NAME not in out + err
    # the counter can still reveal them
    async with resources.sessions() as session:
        from cardsvc.residents.service import find_by_resident_id, reveal

        resident = await find_by_resident_id(session, resources.hsm, rid)
        assert resident is not None
        assert (await reveal(resources.hsm, resident)).name == NAME
