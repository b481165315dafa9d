"""Stateful property test of the terminal money contracts (hypothesis ``RuleBasedStateMachine``).

One counter (cash and account loads onto one virtual card) and one parking terminal (purchases,
pre-authorizations, completions, refunds), interleaved with reversals before and after their
originals, retries and conflicting reuses of serials, torn loads, proofs, and time passing (hold
expiry, load ageing). After every step:

- money is conserved: card float + online account + merchant pending − counter drawer is what the
  online account was funded with (a cash load brings cash into the drawer and value onto the card);
- the books agree with the chip: the float holds what the chip holds, plus the pending loads the
  chip never took (so no proof ever confirmed the wrong load, and no load was undone on the chip);
- the ledger's invariants hold;
- every (terminal, serial) has exactly one answer: a repeat gets the first, another message on it
  is a conflict, and the database holds one message row per serial.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import func, select, text

from cardsvc import clock
from cardsvc.app import create_app
from cardsvc.cache import MemoryCache
from cardsvc.db import create_engine, import_all_models, metadata, session_factory
from cardsvc.hsm.connect import connect_hsm
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from cardsvc.reader.errors import CardRemoved
from cardsvc.reader.link import InProcessLink
from cardsvc.resources import Resources
from cardsvc.settings import Mode, Settings
from terminals.devices.card import VirtualCard, make_dev_personalized_card
from terminals.devices.counter_load import CounterLoadTerminal
from terminals.devices.host_client import HostClient
from terminals.loads.models import LoadStatus, PurseLoad
from terminals.loads.tasks import age_pending_loads
from terminals.online.models import OnlineAuthorization
from terminals.online.tasks import expire_holds
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.factories import make_card, make_site
from tests.terminals.helpers import signed_in, with_pin

FUNDED = 60_000
START = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
AMOUNTS = st.sampled_from([100, 250, 1_000, 2_500])


@dataclass
class Sent:
    """A message the model sent, and the first answer it got."""

    path: str
    body: dict[str, Any]
    answer: dict[str, Any]


@dataclass
class Load:
    serial: int
    amount: int
    on_chip: bool  # the chip took the credit
    approved: bool
    confirmed_by_terminal: bool = False


@dataclass
class World:
    """What the model knows, per terminal: serials sent (and their first answers)."""

    sent: dict[tuple[str, int], Sent] = field(default_factory=dict)
    reserved: dict[tuple[str, int], int] = field(default_factory=dict)  # serial → reversal serial
    loads: list[Load] = field(default_factory=list)
    purchases: list[int] = field(default_factory=list)
    preauths: list[int] = field(default_factory=list)
    completions: list[int] = field(default_factory=list)
    next_serial: dict[str, int] = field(default_factory=dict)


class TerminalMoney(RuleBasedStateMachine):
    database_url: str = ""
    template: Path | None = None
    workdir: Path | None = None

    def __init__(self) -> None:
        super().__init__()
        clock.set_time(START)
        self.loop = asyncio.new_event_loop()
        self.world = World()
        self.run(self._open())

    # --- plumbing ------------------------------------------------------------------------

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _open(self) -> None:
        url = self.database_url
        if url.startswith("sqlite"):
            assert self.template is not None
            assert self.workdir is not None
            path = self.workdir / f"{uuid.uuid4().hex}.db"
            shutil.copyfile(self.template, path)
            url = f"sqlite+aiosqlite:///{path}"
        self.engine = create_engine(url, pool_size=4)
        if self.engine.dialect.name == "postgresql":
            import_all_models()
            names = ", ".join(t.name for t in metadata.sorted_tables)
            async with self.engine.begin() as conn:
                await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        settings_ = Settings(mode=Mode.development, database_url=url, hsm_url="local://dev")
        self.hsm = await connect_hsm("local://dev")
        self.resources = Resources(
            settings=settings_, engine=self.engine, sessions=session_factory(self.engine),
            cache=MemoryCache(), hsm=self.hsm,
        )  # fmt: skip
        app = create_app(settings_, self.resources)
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
            base_url="http://testserver",
        )
        counter = await make_site(
            self.resources, 101, MerchantCategory.retail, TerminalKind.counter
        )
        parking = await make_site(self.resources, 301, MerchantCategory.parking)
        self.card_row = await make_card(self.resources, 71, account=FUNDED)
        self.counter_no, self.parking_no = counter.terminal_no, parking.terminal_no
        self.merchants = (counter.merchant_no, parking.merchant_no)
        self.chip: VirtualCard = make_dev_personalized_card(self.card_row.card_no, 0)
        self.hosts: dict[str, HostClient] = {
            self.counter_no: await signed_in(self.http, counter),
            self.parking_no: await signed_in(self.http, parking),
        }
        self.terminal = CounterLoadTerminal(self.hosts[self.counter_no])
        self.world.next_serial = {self.counter_no: 1, self.parking_no: 1}

    def teardown(self) -> None:
        async def close() -> None:
            await self.http.aclose()
            await self.hsm.close()
            await self.engine.dispose()

        self.run(close())
        self.loop.close()
        clock.reset()

    def load_at(self, terminal_no: str, serial: int) -> Load | None:
        if terminal_no != self.counter_no:
            return None
        return next((x for x in self.world.loads if x.serial == serial), None)

    def reversible(self, key: tuple[str, int]) -> bool:
        """A counter reverses a load only when the card did not take it (or to learn that it
        did: a confirmed load is refused 12); anything else may be reversed."""
        load = self.load_at(*key)
        return load is None or not load.on_chip or load.confirmed_by_terminal

    def serial(self, terminal_no: str) -> int:
        number = self.world.next_serial[terminal_no]
        self.world.next_serial[terminal_no] = number + 1
        return number

    async def send(self, terminal_no: str, path: str, body: dict[str, Any]) -> httpx.Response:
        host = self.hosts[terminal_no]
        message = path.rsplit("/", 1)[-1] if path.startswith("/api/v1/online/") else ""
        if path == "/api/v1/loads" and body.get("source") == "account":
            message = "preauth"  # a load from the account carries the PIN like a payment
        return await host.post(path, with_pin(host, message, body))

    def first(self, terminal_no: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Send a new message on a fresh serial; record its answer as the serial's one answer."""
        response = self.run(self.send(terminal_no, path, body))
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert answer["replayed"] is False
        key = (terminal_no, body["terminal_serial"])
        assert key not in self.world.sent
        if key in self.world.reserved:  # reversed before it arrived
            assert answer["response_code"] == "12", answer
        self.world.sent[key] = Sent(path, body, answer)
        return answer

    def load_body(self, serial: int, amount: int, source: str) -> tuple[dict[str, Any], Any]:
        link = InProcessLink(self.chip).__enter__()
        init = self.terminal.initialize(link, amount)
        body = {
            "terminal_serial": serial, "terminal_no": self.counter_no, "asn": init.asn,
            "amount": amount, "source": source, "balance": init.balance,
            "online_counter": init.online_counter, "key_version": init.key_version,
            "algorithm": init.algorithm, "random": init.random.hex().upper(),
            "mac1": init.mac1.hex().upper(),
        }  # fmt: skip
        return body, link

    # --- loads at the counter ------------------------------------------------------------

    @rule(
        amount=AMOUNTS,
        source=st.sampled_from(["cash", "account"]),
        ending=st.sampled_from(["confirmed", "never_credited", "torn_after_credit"]),
        timeout=st.booleans(),
    )
    def load(self, amount: int, source: str, ending: str, timeout: bool) -> None:
        serial = self.serial(self.counter_no)
        body, link = self.load_body(serial, amount, source)
        answer = self.first(self.counter_no, "/api/v1/loads", body)
        if timeout:
            # The answer was lost: the same request again gets the same MAC2, posted once.
            again = self.run(self.send(self.counter_no, "/api/v1/loads", body)).json()
            assert again == {**answer, "replayed": True}
        load = Load(serial, amount, on_chip=False, approved=answer["approved"])
        self.world.loads.append(load)
        if not answer["approved"] or ending == "never_credited":
            return
        dt, mac2 = answer["host_datetime"], bytes.fromhex(answer["mac2"])
        apdu = bytes.fromhex("805200000B") + bytes.fromhex(dt) + mac2 + b"\x04"
        if ending == "torn_after_credit":
            self.chip.tear_next_commit()
            with pytest.raises(CardRemoved):
                link.transmit(apdu)
            load.on_chip = True
            return
        data, sw = link.transmit(apdu)
        assert sw == 0x9000
        load.on_chip = True
        confirmed = self.run(self.terminal.confirm(serial, data[:4]))
        assert (confirmed["status"], confirmed["tac_valid"]) == ("confirmed", True)
        load.confirmed_by_terminal = True

    @rule()
    def prove_last(self) -> None:
        """A later tap: the card's proof of its last load, relayed by the counter."""
        with InProcessLink(self.chip) as link:
            counter_after = self.chip.state.online_counter
            tac = self.terminal.prove(link, counter_after) if counter_after else None
        if tac is None:
            return
        proof = self.run(self.terminal.send_proof(self.card_row.asn, counter_after, tac))
        assert proof["tac_valid"] is True
        assert proof["status"] == "confirmed", proof

    # --- payments at the parking terminal ------------------------------------------------

    @rule(amount=AMOUNTS)
    def purchase(self, amount: int) -> None:
        serial = self.serial(self.parking_no)
        body = {"terminal_serial": serial, "asn": self.card_row.asn, "amount": amount}
        if self.first(self.parking_no, "/api/v1/online/purchase", body)["approved"]:
            self.world.purchases.append(serial)

    @rule(amount=AMOUNTS)
    def preauth(self, amount: int) -> None:
        serial = self.serial(self.parking_no)
        body = {"terminal_serial": serial, "asn": self.card_row.asn, "amount": amount}
        if self.first(self.parking_no, "/api/v1/online/preauth", body)["approved"]:
            self.world.preauths.append(serial)

    @precondition(lambda self: self.world.preauths)
    @rule(data=st.data(), part=st.sampled_from([1, 2]))
    def complete(self, data: st.DataObject, part: int) -> None:
        original = data.draw(st.sampled_from(self.world.preauths))
        held = self.world.sent[(self.parking_no, original)].body["amount"]
        serial = self.serial(self.parking_no)
        body = {"terminal_serial": serial, "original_serial": original, "amount": held // part}
        if self.first(self.parking_no, "/api/v1/online/completion", body)["approved"]:
            self.world.completions.append(serial)

    @precondition(lambda self: self.world.purchases or self.world.completions)
    @rule(data=st.data())
    def refund(self, data: st.DataObject) -> None:
        original = data.draw(st.sampled_from(self.world.purchases + self.world.completions))
        serial = self.serial(self.parking_no)
        body = {"terminal_serial": serial, "original_serial": original, "amount": 100}
        self.first(self.parking_no, "/api/v1/online/refund", body)

    # --- reversals, retries, conflicts ---------------------------------------------------

    @precondition(lambda self: self.world.sent)
    @rule(data=st.data())
    def reverse_after(self, data: st.DataObject) -> None:
        """Reverse an earlier message of either terminal (never a load the chip took without
        the host knowing: a counter reverses only what the card did not take)."""
        choices = [key for key in self.world.sent if self.reversible(key)]
        if not choices:
            return
        terminal_no, original = data.draw(st.sampled_from(sorted(choices)))
        serial = self.serial(terminal_no)
        body = {"terminal_serial": serial, "original_serial": original}
        answer = self.first(terminal_no, "/api/v1/online/reversal", body)
        load = self.load_at(terminal_no, original)
        if load is not None and load.on_chip:
            assert answer["response_code"] == "12"  # a confirmed load cannot be reversed
        elif load is not None:
            assert answer["response_code"] == "00"

    @rule(terminal=st.sampled_from(["counter", "parking"]))
    def reverse_before(self, terminal: str) -> None:
        """The original timed out before reaching the host; its reversal arrives first."""
        terminal_no = self.counter_no if terminal == "counter" else self.parking_no
        original, serial = self.serial(terminal_no), self.serial(terminal_no)
        body = {"terminal_serial": serial, "original_serial": original}
        answer = self.first(terminal_no, "/api/v1/online/reversal", body)
        assert (answer["response_code"], answer["approved_amount"]) == ("00", 0)
        self.world.reserved[(terminal_no, original)] = serial

    @precondition(lambda self: any(key not in self.world.sent for key in self.world.reserved))
    @rule(data=st.data(), amount=AMOUNTS)
    def original_after_its_reversal(self, data: st.DataObject, amount: int) -> None:
        late = [key for key in self.world.reserved if key not in self.world.sent]
        terminal_no, original = data.draw(st.sampled_from(sorted(late)))
        if terminal_no == self.counter_no:
            body, _link = self.load_body(original, amount, "cash")
            self.first(terminal_no, "/api/v1/loads", body)  # asserts the 12
            self.world.loads.append(Load(original, amount, on_chip=False, approved=False))
        else:
            body = {"terminal_serial": original, "asn": self.card_row.asn, "amount": amount}
            self.first(terminal_no, "/api/v1/online/purchase", body)

    @precondition(lambda self: self.world.sent)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """The same message again: its first answer, replayed; nothing moves twice."""
        key = data.draw(st.sampled_from(sorted(self.world.sent)))
        sent = self.world.sent[key]
        response = self.run(self.send(key[0], sent.path, sent.body))
        assert response.status_code == 200, response.text
        assert response.json() == {**sent.answer, "replayed": True}

    @precondition(lambda self: self.world.sent)
    @rule(data=st.data())
    def reuse(self, data: st.DataObject) -> None:
        """Another message on a used serial, of any kind: a conflict, never a second answer."""
        terminal_no, serial = data.draw(st.sampled_from(sorted(self.world.sent)))
        body = {"terminal_serial": serial, "asn": self.card_row.asn, "amount": 7}
        response = self.run(self.send(terminal_no, "/api/v1/online/purchase", body))
        if self.world.sent[(terminal_no, serial)].body == body:  # pragma: no cover - amount 7
            return
        assert response.status_code == 409, response.text

    # --- time ----------------------------------------------------------------------------

    @rule(hours=st.sampled_from([1, 30, 80]))
    def time_passes(self, hours: int) -> None:
        """Holds expire, pending loads age into breaks (never refunded without evidence)."""
        clock.advance(timedelta(hours=hours))
        self.run(expire_holds(self.resources.sessions, now=clock.now()))
        self.run(age_pending_loads(self.resources.sessions, self.resources.settings, clock.now()))
        for host in self.hosts.values():  # sessions last a day: sign in again
            self.run(host.sign_in())

    # --- invariants ----------------------------------------------------------------------

    async def _books(self) -> tuple[dict[str, int], list[PurseLoad], int, bool]:
        async with self.resources.sessions() as s:

            def bal(kind: AccountKind, owner: str) -> Any:
                return ledger.balance(s, AccountRef(kind, owner))

            books = {
                "float": await bal(AccountKind.card_float, self.card_row.card_no),
                "account": await bal(AccountKind.resident_account, str(self.card_row.resident_id)),
                "drawer": await bal(AccountKind.counter_cash, self.counter_no),
                "pending": sum(
                    [await bal(AccountKind.merchant_pending, m) for m in self.merchants]
                ),
            }
            loads = list((await s.execute(select(PurseLoad).order_by(PurseLoad.id))).scalars())
            duplicated = (
                await s.execute(
                    select(func.count()).select_from(
                        select(OnlineAuthorization.terminal_no, OnlineAuthorization.terminal_serial)
                        .group_by(
                            OnlineAuthorization.terminal_no, OnlineAuthorization.terminal_serial
                        )
                        .having(func.count() > 1)
                        .subquery()
                    )
                )
            ).scalar_one()
            report = await ledger.check_invariants(s)
            return books, loads, int(duplicated), report.ok

    @invariant()
    def money_is_conserved_and_the_books_agree_with_the_chip(self) -> None:
        books, loads, duplicated, ledger_ok = self.run(self._books())
        assert ledger_ok
        assert duplicated == 0
        assert books["float"] + books["account"] + books["pending"] - books["drawer"] == FUNDED
        chip_took = {x.serial for x in self.world.loads if x.on_chip}
        not_on_chip = sum(
            row.amount for row in loads
            if row.status is LoadStatus.pending and row.terminal_serial not in chip_took
        )  # fmt: skip
        assert books["float"] == self.chip.state.balance + not_on_chip
        # No load the chip holds was undone by the books.
        for row in loads:
            if row.terminal_serial in chip_took:
                assert row.status in (LoadStatus.pending, LoadStatus.confirmed), row.status


TerminalMoney.TestCase.settings = settings(
    max_examples=12,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.slow
def test_terminal_money_contracts(database_url: str, sqlite_template: Path, tmp_path: Path) -> None:
    TerminalMoney.database_url = database_url
    TerminalMoney.template = sqlite_template
    TerminalMoney.workdir = tmp_path
    TerminalMoney.TestCase().runTest()
