"""Migrations run up and down on both engines, and the models match them."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime

from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cardsvc import migrate
from cardsvc.db import create_engine, import_all_models, metadata


async def _tables(url: str) -> set[str]:
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_head_has_every_model_table(database_url: str) -> None:
    import_all_models()
    tables = await _tables(database_url)
    assert {t.name for t in metadata.sorted_tables} <= tables
    assert "alembic_version" in tables


def test_models_match_migrations(database_url: str) -> None:
    migrate.check(database_url)  # raises when autogenerate would find a difference


def test_down_to_base_and_up_again(database_url: str) -> None:
    migrate.downgrade(database_url, "base")
    assert asyncio.run(_tables(database_url)) <= {"alembic_version"}
    migrate.upgrade(database_url)
    import_all_models()
    assert {t.name for t in metadata.sorted_tables} <= asyncio.run(_tables(database_url))


_MERCHANT = (
    "INSERT INTO merchants (id, merchant_no, name, category, settlement_account, status, "
    "created_at) VALUES (1, '321100000000001', 'M', 'retail', '622200', 'active', :at)"
)
_TERMINAL = (
    "INSERT INTO terminals (id, terminal_no, psam_no, merchant_id, status, description, "
    "blacklist_version, params_version, created_at) "
    "VALUES (:id, :terminal_no, :psam_no, 1, 'active', '', 0, 0, :at)"
)
_LOAD = (
    "INSERT INTO purse_loads (id, terminal_id, terminal_no, terminal_serial, merchant_no, "
    "request_hash, asn, source, amount, balance_before, online_counter, key_version, random, "
    "mac1, response_code, status, created_at) VALUES (:id, :terminal_id, :terminal_no, :serial, "
    "'321100000000001', '', '3211000000000001', :source, 100, 0, :counter, 1, '00000000', "
    "'00000000', '00', 'confirmed', :at)"
)


async def _rows_at_0005(url: str) -> None:
    """Terminals 1-3 of one merchant; 1 loaded cash and from the account, 2 from the account."""
    at = datetime(2026, 11, 1, 8, tzinfo=UTC)
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(_MERCHANT), {"at": at})
            await conn.execute(
                text(_TERMINAL),
                [
                    {"id": t, "terminal_no": f"3211000000{t:02d}", "psam_no": f"50{t}", "at": at}
                    for t in (1, 2, 3)
                ],
            )
            loads = ((1, 1, "cash"), (2, 1, "account"), (3, 2, "account"))
            await conn.execute(
                text(_LOAD),
                [
                    {"id": i, "serial": i, "counter": i, "terminal_id": t,
                     "terminal_no": f"3211000000{t:02d}", "source": source, "at": at}
                    for i, t, source in loads
                ],
            )  # fmt: skip
    finally:
        await engine.dispose()


async def _kinds_then_clear(url: str) -> list[tuple[object, ...]]:
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.begin() as conn:
            kinds = [
                tuple(r)
                for r in await conn.execute(text("SELECT id, kind FROM terminals ORDER BY id"))
            ]
            for table in ("purse_loads", "terminals", "merchants"):
                await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed names
            return kinds
    finally:
        await engine.dispose()


def test_terminals_that_loaded_purses_keep_loading_after_0006(database_url: str) -> None:
    """0006 gives existing terminals a kind from what they did: cash loads → counter, account
    loads only → kiosk, anything else → pos."""
    migrate.downgrade(database_url, "0005")
    asyncio.run(_rows_at_0005(database_url))
    migrate.upgrade(database_url)
    assert asyncio.run(_kinds_then_clear(database_url)) == [
        (1, "counter"),
        (2, "kiosk"),
        (3, "pos"),
    ]


_BATCH = (
    "INSERT INTO upload_batches (id, terminal_id, merchant_id, batch_no, content_hash, "
    "record_count, total_amount, accepted_count, accepted_amount, refused_count, refused_amount, "
    "clearing_date, blacklist_version, params_version, response, received_at) VALUES (1, 1, 1, 7, "
    "'', 2, 350, 1, 200, 1, 150, '2026-11-02', 0, 0, '{}', :at)"
)
_RECORD = (
    "INSERT INTO offline_records (id, batch_id, position, result_code, merchant_id, "
    "uploading_terminal_id, asn, offline_counter, amount, terminal_no, gray, blacklisted, "
    "received_at) VALUES (:id, 1, :position, :code, 1, 1, '3211000000000001', :counter, :amount, "
    "'321100000001', :gray, false, :at)"
)
_BREAK = (
    "INSERT INTO break_items (id, kind, asn, counter, record_id, status, detail, created_at) "
    "VALUES (:id, :kind, '3211000000000001', :counter, :record, :status, :detail, :at)"
)


async def _breaks_at_0006(url: str) -> None:
    """A batch of 2026-11-02 with an accepted record (after a gap at counter 3, later filled) and
    a gray one."""
    at = datetime(2026, 11, 2, 8, tzinfo=UTC)
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(_MERCHANT), {"at": at})
            await conn.execute(
                text(
                    _TERMINAL.replace("description,", "description, kind,").replace(
                        "'',", "'', 'pos',"
                    )
                ),
                {"id": 1, "terminal_no": "321100000001", "psam_no": "50", "at": at},
            )
            await conn.execute(text(_BATCH), {"at": at})
            await conn.execute(
                text(_RECORD),
                [
                    {
                        "id": 1,
                        "position": 0,
                        "code": "00",
                        "counter": 4,
                        "amount": 200,
                        "gray": False,
                        "at": at,
                    },
                    {
                        "id": 2,
                        "position": 1,
                        "code": "04",
                        "counter": 5,
                        "amount": 150,
                        "gray": True,
                        "at": at,
                    },
                ],
            )
            await conn.execute(
                text(_BREAK),
                [
                    {"id": 1, "kind": "counter_gap", "counter": 3, "record": 1,
                     "status": "resolved", "detail": "filled by a later upload", "at": at},
                    {"id": 2, "kind": "gray", "counter": 5, "record": 2, "status": "open",
                     "detail": "gray record held", "at": at},
                ],
            )  # fmt: skip
    finally:
        await engine.dispose()


async def _read(url: str, sql: str, clear: bool = False) -> list[tuple[object, ...]]:
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.begin() as conn:
            rows = [tuple(r) for r in await conn.execute(text(sql))]
            if clear:
                for table in (
                    "break_items", "offline_records", "upload_batches", "terminals", "merchants",
                ):  # fmt: skip
                    await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed names
            return rows
    finally:
        await engine.dispose()


def test_0007_moves_break_items_to_the_core_with_their_amounts_and_days(database_url: str) -> None:
    migrate.downgrade(database_url, "0006")
    asyncio.run(_breaks_at_0006(database_url))
    migrate.upgrade(database_url)
    rows = asyncio.run(
        _read(
            database_url,
            "SELECT id, kind, status, amount, clearing_date, source, source_id, terminal_no, "
            "reason, resolver, resolution, note FROM break_items ORDER BY id",
        )
    )
    assert [(*r[:4], str(r[4]), *r[5:]) for r in rows] == [
        (1, "counter_gap", "resolved", None, "2026-11-02", "offline_record", 1, "321100000001",
         "counter not seen", "system:uploads", "filled", "filled by a later upload"),
        (2, "gray", "open", 150, "2026-11-02", "offline_record", 2, "321100000001",
         "gray record held", None, None, None),
    ]  # fmt: skip
    migrate.downgrade(database_url, "0006")
    back = asyncio.run(
        _read(
            database_url,
            "SELECT id, kind, counter, record_id, status, detail FROM break_items ORDER BY id",
            clear=True,
        )
    )
    assert back == [
        (1, "counter_gap", 3, 1, "resolved", "filled by a later upload"),
        (2, "gray", 5, 2, "open", "gray record held"),
    ]
    migrate.upgrade(database_url)


def test_0011_narrows_the_stored_masks_and_drops_the_birth_date(database_url: str) -> None:
    migrate.downgrade(database_url, "0010")

    async def old_row() -> None:
        engine: AsyncEngine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(
                        "INSERT INTO residents (id, id_index, id_cipher, id_masked, name_cipher, "
                        "name_masked, sex, birth_date, phone, address, created_at, created_by) "
                        "VALUES (1, 'i', :c, '321102********1232', :c, '张*', 'M', '1990-03-07', "
                        "'', '', :at, 'op')"
                    ),
                    {"c": b"x", "at": datetime(2026, 11, 1, tzinfo=UTC)},
                )
        finally:
            await engine.dispose()

    asyncio.run(old_row())
    migrate.upgrade(database_url)
    rows = asyncio.run(_read(database_url, "SELECT id, id_masked FROM residents"))
    assert rows == [(1, "321***********1232")]
    engine_columns = asyncio.run(_columns(database_url, "residents"))
    assert "birth_date" not in engine_columns
    asyncio.run(_clear(database_url, "residents"))


async def _clear(url: str, table: str) -> None:
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - a fixed name
    finally:
        await engine.dispose()


async def _columns(url: str, table: str) -> set[str]:
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(
                await conn.run_sync(
                    lambda c: {col["name"] for col in inspect(c).get_columns(table)}
                )
            )
    finally:
        await engine.dispose()


_P_BATCH = (
    "INSERT INTO upload_batches (id, terminal_id, merchant_id, batch_no, content_hash, "
    "record_count, total_amount, accepted_count, accepted_amount, refused_count, refused_amount, "
    "clearing_date, blacklist_version, params_version, response, received_at) VALUES (1, 1, 1, 7, "
    "'', 2, 300, 1, 100, 1, 200, '2026-10-30', 0, 0, '{}', :at)"
)
_P_RECORD = (
    "INSERT INTO offline_records (id, batch_id, position, result_code, merchant_id, "
    "uploading_terminal_id, asn, offline_counter, balance_before, amount, terminal_no, "
    "terminal_serial, gray, blacklisted, clearing_date, received_at) VALUES (:id, 1, :position, "
    ":code, 1, 1, '3211000000000001', :counter, 1000, :amount, '321100000001', :serial, false, "
    "false, :day, :at)"
)
_P_TRANSACTION = (
    "INSERT INTO ledger_transactions (id, idempotency_key, content_hash, tx_type, clearing_date, "
    "reverses_id, amount, line_count, description, posted_at) VALUES (:id, :key, 'h', 'load', "
    ":day, :reverses, 100, 2, '', :at)"
)
_P_LINE = (
    "INSERT INTO ledger_lines (id, transaction_id, account_id, side, amount) "
    "VALUES (:id, :tx, :account, :side, 100)"
)


async def _journal_at_0009(url: str) -> None:
    """An upload of one accepted and one refused record; a load and its reversal."""
    at = datetime(2026, 10, 30, 8, tzinfo=UTC)
    engine: AsyncEngine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(_MERCHANT), {"at": at})
            await conn.execute(
                text(
                    _TERMINAL.replace("status,", "kind, status,").replace(
                        "1, 'active'", "1, 'pos', 'active'"
                    )
                ),
                {"id": 1, "terminal_no": "321100000001", "psam_no": "5", "at": at},
            )
            await conn.execute(text(_P_BATCH), {"at": at})
            await conn.execute(
                text(_P_RECORD),
                [
                    {"id": 1, "position": 0, "code": "00", "counter": 4, "amount": 100,
                     "serial": 9, "day": date(2026, 10, 30), "at": at},
                    {"id": 2, "position": 1, "code": "04", "counter": 5, "amount": 200,
                     "serial": 10, "day": None, "at": at},
                ],
            )  # fmt: skip
            for account, kind, side in ((1, "counter_cash", "debit"), (2, "card_float", "credit")):
                await conn.execute(
                    text(
                        "INSERT INTO ledger_accounts (id, kind, owner_ref, normal_side, "
                        "may_go_negative, balance, held, created_at) "
                        "VALUES (:id, :kind, 'x', :side, false, 0, 0, :at)"
                    ),
                    {"id": account, "kind": kind, "side": side, "at": at},
                )
            await conn.execute(
                text(_P_TRANSACTION),
                [
                    {"id": 1, "key": "load:1", "day": date(2026, 10, 30), "reverses": None, "at": at},
                    {"id": 2, "key": "undo:1", "day": date(2026, 10, 31), "reverses": 1, "at": at},
                ],
            )  # fmt: skip
            await conn.execute(
                text(_P_LINE),
                [
                    {"id": 1, "tx": 1, "account": 1, "side": "debit"},
                    {"id": 2, "tx": 1, "account": 2, "side": "credit"},
                    {"id": 3, "tx": 2, "account": 2, "side": "debit"},
                    {"id": 4, "tx": 2, "account": 1, "side": "credit"},
                ],
            )
    finally:
        await engine.dispose()


async def _after_0010(url: str) -> dict[str, list[tuple[object, ...]]]:
    engine: AsyncEngine = create_engine(url)
    queries = {
        "records": "SELECT id, result_code, clearing_date FROM offline_records ORDER BY id",
        "card_keys": "SELECT asn, offline_counter, record_id FROM offline_card_keys",
        "serial_keys": "SELECT terminal_no, terminal_serial, record_id FROM offline_serial_keys",
        "keys": "SELECT idempotency_key, transaction_id, clearing_date, reverses_id "
        "FROM ledger_transaction_keys ORDER BY transaction_id",
        "lines": "SELECT id, transaction_id, clearing_date FROM ledger_lines ORDER BY id",
    }
    try:
        async with engine.begin() as conn:
            found = {
                name: [tuple(r) for r in await conn.execute(text(sql))]
                for name, sql in queries.items()
            }
            tables = (
                "ledger_lines", "ledger_transactions", "ledger_transaction_keys", "ledger_accounts",
                "offline_serial_keys", "offline_card_keys", "offline_records", "upload_batches",
                "terminals", "merchants",
            )  # fmt: skip
            for table in tables:
                await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed names
            return found
    finally:
        await engine.dispose()


def _day(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def test_records_and_journal_keep_their_keys_through_0010(database_url: str) -> None:
    """0010 moves the unique keys out of the partitioned tables: every accepted record's keys,
    every transaction's idempotency key and reversal, and each line's clearing date."""
    migrate.downgrade(database_url, "0009")
    asyncio.run(_journal_at_0009(database_url))
    migrate.upgrade(database_url)
    found = asyncio.run(_after_0010(database_url))
    assert [(i, c, _day(d)) for i, c, d in found["records"]] == [
        (1, "00", date(2026, 10, 30)),
        (2, "04", date(2026, 10, 30)),  # a refused record takes its upload's day
    ]
    assert found["card_keys"] == [("3211000000000001", 4, 1)]
    assert found["serial_keys"] == [("321100000001", 9, 1)]
    assert [(k, t, _day(d), r) for k, t, d, r in found["keys"]] == [
        ("load:1", 1, date(2026, 10, 30), None),
        ("undo:1", 2, date(2026, 10, 31), 1),
    ]
    assert [(i, t, _day(d)) for i, t, d in found["lines"]] == [
        (1, 1, date(2026, 10, 30)),
        (2, 1, date(2026, 10, 30)),
        (3, 2, date(2026, 10, 31)),
        (4, 2, date(2026, 10, 31)),
    ]


_OLD_ENTRY = (
    "INSERT INTO audit_entries (id, seq, at, actor, action, entity, entity_id, before, after, "
    "prev_hash, hash) VALUES (:id, :id, :at, :actor, 'test.step', 'test', :entity_id, NULL, "
    ":after, :prev, :hash)"
)


def _unkeyed_chain(rows: list[dict[str, object]]) -> list[tuple[str, str]]:
    """The SHA-256 chain of the trail before 0015: (prev_hash, hash) per entry."""
    import hashlib
    import json

    links, prev = [], "0" * 64
    for row in rows:
        at = row["at"]
        assert isinstance(at, datetime)
        body = json.dumps(
            [row["id"], at.isoformat(timespec="microseconds"), row["actor"], "test.step", "test",
             row["entity_id"], None, row["after"]],
            separators=(",", ":"),
            ensure_ascii=False,
        )  # fmt: skip
        digest = hashlib.sha256(f"{prev}|{body}".encode()).hexdigest()
        links.append((prev, digest))
        prev = digest
    return links


def test_audit_entries_are_sealed_again_after_0015(database_url: str) -> None:
    """0015 keeps the trail and makes every entry unsealed (numbered again by the first sealer,
    in the order written); going back rebuilds the unkeyed chain of the earlier code."""
    at = datetime(2026, 11, 2, 8, 30, 1, 250000, tzinfo=UTC)
    rows: list[dict[str, object]] = [
        {"id": n, "at": at, "actor": f"op{n}", "entity_id": str(n), "after": '{"n":1}'}
        for n in (1, 2, 3)
    ]
    links = _unkeyed_chain(rows)
    migrate.downgrade(database_url, "0014")

    async def old_trail() -> None:
        engine: AsyncEngine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    text(_OLD_ENTRY),
                    [
                        {**row, "prev": p, "hash": h}
                        for row, (p, h) in zip(rows, links, strict=True)
                    ],
                )
                await conn.execute(
                    text("INSERT INTO audit_head (id, seq, hash) VALUES (1, 3, :h)"),
                    {"h": links[-1][1]},
                )
        finally:
            await engine.dispose()

    asyncio.run(old_trail())
    migrate.upgrade(database_url)
    assert asyncio.run(
        _read(database_url, "SELECT id, seq, mac FROM audit_entries ORDER BY id")
    ) == [
        (1, None, None),
        (2, None, None),
        (3, None, None),
    ]
    assert asyncio.run(_read(database_url, "SELECT seq, mac FROM audit_head")) == [(0, "0" * 64)]
    migrate.downgrade(database_url, "0014")
    back = asyncio.run(
        _read(database_url, "SELECT id, seq, prev_hash, hash FROM audit_entries ORDER BY id")
    )
    assert back == [(n, n, p, h) for n, (p, h) in zip((1, 2, 3), links, strict=True)]
    migrate.upgrade(database_url)

    async def clear() -> None:
        engine: AsyncEngine = create_engine(database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM audit_entries"))
                await conn.execute(text("DELETE FROM audit_head"))
        finally:
            await engine.dispose()

    asyncio.run(clear())
