"""The settlement files of a day: detail, operator files in their fixed-width layouts, the
manifest and its HSM MAC, ``cardsvc settlement verify``, and a run killed at the files step."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from datetime import date, timedelta

import httpx
import pytest
from sqlalchemy import update

from cardsvc.clearing.service import cut_moment
from cardsvc.hsm import HsmClient
from cardsvc.resources import Resources
from settlement.nightly import files, manifest, repository, service
from settlement.nightly.models import RunStatus, SettlementLine
from settlement.nightly.service import FileStatus, ManifestStatus
from settlement.nightly.tasks import settle_due
from settlement.payouts import service as payouts
from settlement.payouts.models import PayoutStatus
from settlement.payouts.schemas import PayeeIn
from terminals.registry.models import Merchant
from terminals.uploads.models import UploadBatch
from tests.processes import run_cardsvc
from tests.settlement.helpers import accepted_by_merchant, books, day_files, ride_day
from tests.terminals.helpers import BUS_MERCHANT, TAXI_MERCHANT, World

OPERATOR_FILES = ("statement", "refusals", "uploads")


def expected_names(day: date) -> set[str]:
    names = {"summary.csv", "detail.csv", "billers.csv", "manifest.json", f"bank-{day:%Y%m%d}.csv"}
    for merchant in (BUS_MERCHANT, TAXI_MERCHANT):
        names |= {f"operator-{merchant}-{kind}.txt" for kind in OPERATOR_FILES}
    return names


async def settle(resources: Resources, day: date) -> dict[str, bytes]:
    await service.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    return day_files(resources.settings.settlement_root, day)


# --- known answers --------------------------------------------------------------------------

KAT_DAY = date(2026, 3, 2)
KAT_ENTRIES = [
    manifest.Entry("summary.csv", 2, hashlib.sha256(b"bc").hexdigest()),
    manifest.Entry("detail.csv", 1, hashlib.sha256(b"a").hexdigest()),
]
KAT_CANONICAL = (
    b"cardsvc-settlement-manifest/1\n"
    b"clearing_date 2026-03-02\n"
    b"ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb 1 detail.csv\n"
    b"1e0bbd6c686ba050b8eb03ffeedc64fdc9d80947fce821abbe5d6dc8d252c5ac 2 summary.csv\n"
)
# The development FILE_MAC key (hsm_sim: SHA-256 of "hsm-sim development key FILE_MAC", first
# 16 bytes) and the retail MAC (ISO 9797-1 algorithm 3, padding method 2) of KAT_CANONICAL,
# computed independently with openssl (legacy provider): des-cbc with K1 over the padded bytes,
# then des-ecb -d with K2 and des-ecb with K1 on the last block.
DEV_FILE_MAC_KEY = "68C99912D22DDA6CCF345318F0EDFD72"
KAT_MAC = "567FF1F78FB36360"


def test_canonical_manifest_bytes() -> None:
    assert manifest.canonical(KAT_DAY, KAT_ENTRIES) == KAT_CANONICAL
    key = hashlib.sha256(b"hsm-sim development key FILE_MAC").hexdigest()[:32].upper()
    assert key == DEV_FILE_MAC_KEY


async def test_manifest_mac_known_answer(hsm: HsmClient) -> None:
    body = await service.sign_manifest(hsm, KAT_DAY, KAT_ENTRIES)
    parsed = manifest.parse(body)
    assert parsed.mac == KAT_MAC
    assert parsed.files == tuple(sorted(KAT_ENTRIES, key=lambda e: e.name))
    assert json.loads(body)["mac"] == {
        "key": "FILE_MAC", "algorithm": "ISO9797-1-M2-ALG3", "value": KAT_MAC,
    }  # fmt: skip
    assert body.endswith(b"}\n")


def test_yuan_from_fen_and_fixed_fields() -> None:
    assert files.STATEMENT_TOTAL.record(3, 450, 0, 450, 5, -7).startswith(
        "T0000000003+00000000000450+00000000000000+000000000004500000000005-00000000000007"
    )
    line = files.REFUSALS_RECORD.record(
        "03", "321100000001", 7, 2, 99, "3211********0012", None, None, None, "N"
    )
    assert len(line) == files.REFUSALS_LENGTH + 2
    assert line.endswith("\r\n")
    assert line[0:3] == "D03"
    assert line[63:73] == " " * 10  # a field the record did not carry is blank
    with pytest.raises(ValueError, match="does not fit"):
        files.UPLOADS_RECORD.record("1", 10**10, 1, 1, 1, 1, 0, 0, "x")


# --- a day of rides -------------------------------------------------------------------------


def fixed_records(data: bytes, length: int) -> list[str]:
    text = data.decode("ascii")
    lines = text.split("\r\n")
    assert lines[-1] == ""
    assert all(len(line) == length for line in lines[:-1]), "every record has its length"
    return lines[:-1]


async def test_a_day_writes_every_file_and_verifies(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    accepted = await accepted_by_merchant(resources, day)
    written = await settle(resources, day)
    assert set(written) == expected_names(day)

    detail = written["detail.csv"].decode("utf-8")
    assert detail.startswith("\ufeff" + ",".join(files.DETAIL_HEADER) + "\r\n")
    rows = detail.removeprefix("\ufeff").split("\r\n")[1:-1]
    assert len(rows) == sum(count for count, _total in accepted.values())
    cells = [row.split(",") for row in rows]
    assert [c[0] for c in cells] == sorted(c[0] for c in cells)
    for c in cells:
        assert c[1] == "offline"
        assert c[5].startswith("3211********")  # masked as everywhere
        assert len(c[5]) == 16
        assert len(c[7].split(".")[1]) == 2
    assert sum(int(c[7].replace(".", "")) for c in cells) == sum(t for _c, t in accepted.values())

    for merchant in (BUS_MERCHANT, TAXI_MERCHANT):
        statement = fixed_records(
            written[f"operator-{merchant}-statement.txt"], files.STATEMENT_LENGTH
        )
        assert statement[0].startswith(f"HQS{day:%Y%m%d}{merchant}")
        assert [r[0] for r in statement] == ["H", "C", "R", "T"]
        assert statement[1][1:21].rstrip() == "offline"
        assert statement[2][1:3] == "00"
        refusals = fixed_records(
            written[f"operator-{merchant}-refusals.txt"], files.REFUSALS_LENGTH
        )
        assert refusals == [
            files.REFUSALS_HEADER.record("SS", int(f"{day:%Y%m%d}"), merchant).removesuffix("\r\n"),
            files.REFUSALS_TOTAL.record(0, 0).removesuffix("\r\n"),
        ]
        uploads = fixed_records(written[f"operator-{merchant}-uploads.txt"], files.UPLOADS_LENGTH)
        assert [r[0] for r in uploads] == ["H", "D", "T"]
        assert uploads[-1][1:11] == "0000000001"

    listed = json.loads(written["manifest.json"])
    assert [f["name"] for f in listed["files"]] == sorted(expected_names(day) - {"manifest.json"})
    for entry in listed["files"]:
        data = written[entry["name"]]
        assert entry == {
            "name": entry["name"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
        }  # fmt: skip

    result = await service.verify_files(resources.settings, resources.hsm, day)
    assert result.ok, result.problems()
    assert result.manifest is ManifestStatus.ok
    assert {f.name for f in result.files} == expected_names(day) - {"manifest.json"}

    # Removed and written again from the database: the same bytes.
    directory = resources.settings.settlement_root / day.isoformat()
    for path in directory.iterdir():
        path.unlink()
    assert await settle(resources, day) == written


async def test_verify_names_altered_missing_and_extra_files(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    await settle(resources, day)
    directory = resources.settings.settlement_root / day.isoformat()
    statement = directory / f"operator-{BUS_MERCHANT}-statement.txt"
    statement.write_bytes(statement.read_bytes().replace(b"+", b"-", 1))
    (directory / "detail.csv").unlink()
    (directory / "extra.csv").write_bytes(b"x")

    result = await service.verify_files(resources.settings, resources.hsm, day)
    assert not result.ok
    assert result.manifest is ManifestStatus.ok  # the manifest itself is intact
    found = {f.name: f.status for f in result.files if f.status is not FileStatus.ok}
    assert found == {
        statement.name: FileStatus.altered,
        "detail.csv": FileStatus.missing,
        "extra.csv": FileStatus.extra,
    }
    assert result.problems() == [
        "missing: detail.csv", f"altered: {statement.name}", "extra: extra.csv",
    ]  # fmt: skip


async def test_a_manifest_rewritten_to_match_fails_its_mac(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    await settle(resources, day)
    directory = resources.settings.settlement_root / day.isoformat()
    summary = directory / "summary.csv"
    forged = summary.read_bytes().replace(b"City Bus Co.", b"City Bus Cx.")
    summary.write_bytes(forged)
    body = json.loads((directory / "manifest.json").read_bytes())
    for entry in body["files"]:
        if entry["name"] == "summary.csv":
            entry["size"], entry["sha256"] = len(forged), hashlib.sha256(forged).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(body, indent=2) + "\n")

    result = await service.verify_files(resources.settings, resources.hsm, day)
    assert result.manifest is ManifestStatus.mac_invalid
    assert all(f.status is FileStatus.ok for f in result.files)  # hashes match the forgery
    assert not result.ok

    (directory / "manifest.json").write_text("{}")
    result = await service.verify_files(resources.settings, resources.hsm, day)
    assert result.manifest is ManifestStatus.invalid
    (directory / "manifest.json").unlink()
    result = await service.verify_files(resources.settings, resources.hsm, day)
    assert result.manifest is ManifestStatus.missing
    assert not result.ok


async def test_formula_cells_are_escaped_in_the_csv_files(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    async with resources.sessions() as session:
        await session.execute(
            update(Merchant)
            .where(Merchant.merchant_no == BUS_MERCHANT)
            .values(name='=HYPERLINK("http://x","bus")')
        )
        await session.commit()
    written = await settle(resources, day)
    summary = written["summary.csv"].decode("utf-8")
    assert f'{BUS_MERCHANT},"\'=HYPERLINK(""http://x"",""bus"")",offline,' in summary
    for line in summary.split("\r\n")[1:-1]:
        assert not any(c.startswith(("=", "+", "@")) for c in line.split(","))


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cardsvc("settlement", *args, env={**os.environ, **env})


@pytest.mark.usefixtures("cli_env")
async def test_verify_command_exit_status(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    await settle(resources, day)
    intact = _cli("verify", "--date", day.isoformat())
    assert intact.returncode == 0, intact.stderr
    assert f"{day.isoformat()} files intact" in intact.stdout
    directory = resources.settings.settlement_root / day.isoformat()
    (directory / f"operator-{TAXI_MERCHANT}-uploads.txt").unlink()
    broken = _cli("verify", "--date", day.isoformat())
    assert broken.returncode == 1
    assert f"missing  operator-{TAXI_MERCHANT}-uploads.txt" in broken.stdout
    assert broken.stderr.startswith("error: SettlementFilesInvalid: ")
    assert f"missing: operator-{TAXI_MERCHANT}-uploads.txt" in broken.stderr
    nothing = _cli("verify", "--date", "2001-01-01")
    assert nothing.returncode == 1
    assert nothing.stderr.startswith("error: NotFound: ")


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("point", ["files:asides", "files:published"])
async def test_a_run_killed_at_the_files_step_resumes_to_the_same_files(
    client: httpx.AsyncClient, world: World, resources: Resources, point: str
) -> None:
    day = await ride_day(client, world, resources)
    async with resources.sessions() as session:
        body = PayeeIn.model_validate({**BANK, "account_holder": "City Bus Co."})
        await payouts.set_payee(session, BUS_MERCHANT, body, actor="t")
        await session.commit()
    killed = _cli("run", "--date", day.isoformat(), CARDSVC_SETTLEMENT_CRASH_AT=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    directory = resources.settings.settlement_root / day.isoformat()
    assert not (directory / "manifest.json").exists()
    resumed = _cli("run", "--date", day.isoformat())
    assert resumed.returncode == 0, resumed.stderr
    first = day_files(resources.settings.settlement_root, day)
    assert set(first) == expected_names(day)
    assert not [name for name in os.listdir(directory) if name.startswith(".")]
    assert (await service.verify_files(resources.settings, resources.hsm, day)).ok
    paid = await books(resources)
    assert paid.payable[BUS_MERCHANT] == 0  # issued once, after its bank file
    assert await settle(resources, day) == first
    assert await books(resources) == paid


@pytest.mark.parametrize("tamper", ["line", "upload"])
async def test_a_day_that_does_not_balance_writes_no_file(
    client: httpx.AsyncClient, world: World, resources: Resources, tamper: str
) -> None:
    day = await ride_day(client, world, resources)
    written = await settle(resources, day)
    directory = resources.settings.settlement_root / day.isoformat()
    for name in written:
        (directory / name).unlink()
    async with resources.sessions() as session:
        if tamper == "line":
            await session.execute(
                update(SettlementLine)
                .where(SettlementLine.merchant_no == BUS_MERCHANT)
                .values(gross=SettlementLine.gross + 1)
            )
        else:
            await session.execute(
                update(UploadBatch)
                .where(UploadBatch.clearing_date == day)
                .values(accepted_count=UploadBatch.accepted_count + 1)
            )
        await session.commit()

    with pytest.raises(service.SettlementUnbalanced, match="no file written") as refused:
        await service.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    expected = "cleared" if tamper == "line" else "records != accepted + refused"
    assert expected in str(refused.value)
    assert os.listdir(directory) == []
    async with resources.sessions() as session:
        (state,) = await service.status(session, day)
    assert state.run.status is RunStatus.failed


async def test_one_run_at_a_time(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    async with repository.run_guard(resources.sessions) as held:
        assert held
        with pytest.raises(service.SettlementRunning):
            await service.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
        async with repository.run_guard(resources.sessions) as second:
            assert not second
    result = await service.run(resources.sessions, resources.settings, day, hsm=resources.hsm)
    assert result.status is RunStatus.settled


async def test_the_worker_settles_the_days_past_their_cutoff(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    before_cut = cut_moment(resources.settings, day) - timedelta(seconds=1)
    assert await settle_due(resources, before_cut) == "no day to settle"
    after_cut = cut_moment(resources.settings, day) + timedelta(seconds=1)
    assert await settle_due(resources, after_cut) == f"settled {day.isoformat()}"
    async with resources.sessions() as session:
        (state,) = await service.status(session, day)
    assert state.run.status is RunStatus.settled
    assert (await service.verify_files(resources.settings, resources.hsm, day)).ok
    assert await settle_due(resources, after_cut) == "no day to settle"


BANK = {"bank_name": "城市银行", "bank_branch": "东门支行", "account_no": "6222000011112222"}


async def test_the_bank_file_pays_each_due_payout_once(
    client: httpx.AsyncClient, world: World, resources: Resources
) -> None:
    day = await ride_day(client, world, resources)
    async with resources.sessions() as session:
        for merchant, holder in ((BUS_MERCHANT, "=City Bus Co."), (TAXI_MERCHANT, "Taxi Co.")):
            body = PayeeIn.model_validate({**BANK, "account_holder": holder})
            await payouts.set_payee(session, merchant, body, actor="t")
        await session.commit()
    written = await settle(resources, day)
    owed = {m: (await books(resources)).payable[m] for m in (BUS_MERCHANT, TAXI_MERCHANT)}
    assert owed == {BUS_MERCHANT: 0, TAXI_MERCHANT: 0}  # paid: payable -> bank
    lines = written[f"bank-{day:%Y%m%d}.csv"].decode("utf-8").split("\r\n")
    assert lines[0] == ",".join(files.BANK_HEADER)
    async with resources.sessions() as session:
        paid = await payouts.day_payouts(session, day)
    assert {p.status for p in paid} == {PayoutStatus.issued}
    amounts = {p.merchant_no: p.amount for p in paid}
    assert lines[1:] == [
        f"P{day:%Y%m%d}{BUS_MERCHANT},DEV0000000001,城市银行,东门支行,6222000011112222,"
        f"'=City Bus Co.,{files.yuan(amounts[BUS_MERCHANT])},CNY,{BUS_MERCHANT},",
        f"P{day:%Y%m%d}{TAXI_MERCHANT},DEV0000000001,城市银行,东门支行,6222000011112222,"
        f"Taxi Co.,{files.yuan(amounts[TAXI_MERCHANT])},CNY,{TAXI_MERCHANT},",
        f"TOTAL,2,{files.yuan(sum(amounts.values()))}",
        "",
    ]
    bank = await books(resources)
    # A rerun: the same bytes (issued payouts stay in the file), nothing paid twice.
    assert await settle(resources, day) == written
    assert await books(resources) == bank
