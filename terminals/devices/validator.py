"""What bus validators and taxi meters share: the purse purchase through a PSAM, the lists,
gray records and their recovery, and batch uploads (reference/pboc.md §3, §5, §6.4, §6.5, §9).

A device talks to the card and to its PSAM in APDUs only (the card through a
``cardsvc.reader`` :class:`CardLink`), exactly as field equipment does:

1. SELECT the purse; a blocked application (6A81/9303) is refused;
2. READ BINARY 0015: ASN and card type (MainCardType, byte 28);
3. a blacklisted ASN is refused and its application blocked on the spot (APPLICATION BLOCK
   with the PSAM's maintenance MAC, §6.5);
4. a gray record left by this card is settled first: INITIALIZE shows the card counter; when it
   moved past the gray one, GET TRANSACTION PROVE (§6.4) returns the TAC and the gray record
   becomes a normal one; otherwise the debit never happened and the gray record is dropped;
5. INITIALIZE FOR PURCHASE (or CAPP), INIT SAM FOR PURCHASE (PSAM 8070: serial + MAC1),
   [UPDATE CAPP DATA CACHE], DEBIT (TAC‖MAC2), CREDIT SAM FOR PURCHASE (PSAM 8072 checks MAC2);
6. a card pulled during DEBIT leaves a gray record (flag set, no TAC) to recover later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cardsvc.reader.errors import CardRemoved
from cardsvc.reader.link import CardLink
from cardsvc.settings import DEFAULT_TIMEZONE
from terminals.devices.host_client import HostClient, HostError
from terminals.devices.psam import Psam

# The simulated terminals keep the wall clock of the default zone (docs/architecture.md §6).
LOCAL_TZ = ZoneInfo(DEFAULT_TIMEZONE)
PURSE_AID = bytes.fromhex("A00000000386980701")
TX_PURCHASE = 0x06
TX_CAPP = 0x09


class TapRefused(Exception):
    """The device refused the card (blocked, blacklisted, short balance, card error)."""

    def __init__(self, reason: str, sw: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sw = sw


class DeviceError(Exception):
    """The PSAM or the card answered something a working device never expects."""


@dataclass
class TapResult:
    asn: str
    amount: int
    fare: int
    balance_after: int
    record: dict[str, Any]
    recovered: dict[str, Any] | None = None


@dataclass
class DeviceState:
    blacklist: set[str] = field(default_factory=set)
    blacklist_version: int = 0
    params: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    params_version: int = 0
    pending: list[dict[str, Any]] = field(default_factory=list)  # records not yet uploaded
    gray: dict[str, dict[str, Any]] = field(default_factory=dict)  # ASN -> gray record waiting
    batch_no: int = 0


def _apdu(header: str, data: bytes = b"", le: int | None = None) -> bytes:
    raw = bytes.fromhex(header)
    if data:
        raw += bytes((len(data),)) + data
    if le is not None:
        raw += bytes((le,))
    return raw


def _sam(psam: Psam, apdu: bytes) -> bytes:
    response = psam.process(apdu)
    sw = int.from_bytes(response[-2:], "big")
    if sw != 0x9000:
        raise DeviceError(f"PSAM answered {sw:04X}")
    return response[:-2]


class Validator:
    """A terminal with a PSAM, a host connection and the lists."""

    category = "retail"

    def __init__(
        self, host: HostClient, psam: Psam, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.host = host
        self.psam = psam
        self.terminal_no = psam.terminal_no.hex()
        self.state = DeviceState()
        self.clock = clock or (lambda: datetime.now(LOCAL_TZ))

    # --- host ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Sign in and bring both lists up to date."""
        self.host.blacklist_version = self.state.blacklist_version
        self.host.params_version = self.state.params_version
        signed = await self.host.sign_in()
        if (
            signed.blacklist_version != self.state.blacklist_version
            or signed.params_version != self.state.params_version
        ):
            await self.refresh_lists()

    async def refresh_lists(self) -> None:
        st = self.state
        response = await self.host.get(
            f"/api/v1/terminal/lists/blacklist?since={st.blacklist_version}"
        )
        if response.status_code != 200:
            raise HostError(response.status_code, response.text)
        data = response.json()
        if data["mode"] == "full":
            st.blacklist = set()
        for item in data["entries"]:
            if item["action"] == "add":
                st.blacklist.add(item["asn"])
            else:
                st.blacklist.discard(item["asn"])
        st.blacklist_version = int(data["version"])
        response = await self.host.get(
            f"/api/v1/terminal/lists/parameters?since={st.params_version}"
        )
        if response.status_code != 200:
            raise HostError(response.status_code, response.text)
        data = response.json()
        if data["mode"] == "full":
            st.params = {}
        for item in data["entries"]:
            table = st.params.setdefault(item["table"], {})
            if item["action"] == "set":
                table[item["key"]] = dict(item["value"])
            else:
                table.pop(item["key"], None)
        st.params_version = int(data["version"])
        response = await self.host.post(
            "/api/v1/terminal/lists/versions",
            {"blacklist_version": st.blacklist_version, "params_version": st.params_version},
        )
        if response.status_code != 200:
            raise HostError(response.status_code, response.text)

    async def upload(self, max_records: int = 500) -> list[dict[str, Any]]:
        """Upload the pending records in batches; a batch is dropped only once answered."""
        answers: list[dict[str, Any]] = []
        while self.state.pending:
            records = self.state.pending[:max_records]
            self.state.batch_no += 1
            payload = {
                "batch_no": self.state.batch_no,
                "psam_no": self.host.psam_no,
                "record_count": len(records),
                "total_amount": sum(int(r["amount"]) for r in records),
                "blacklist_version": self.state.blacklist_version,
                "params_version": self.state.params_version,
                "records": records,
            }
            response = await self.host.post("/api/v1/terminal/uploads", payload)
            if response.status_code != 200:
                self.state.batch_no -= 1
                raise HostError(response.status_code, response.text)
            answers.append(response.json())
            del self.state.pending[: len(records)]
        return answers

    # --- parameters -----------------------------------------------------------------------

    def param(self, table: str, key: str, name: str, default: int) -> int:
        return int(self.state.params.get(table, {}).get(key, {}).get(name, default))

    def concession_percent(self, card_type: str) -> int:
        return self.param("concessions", card_type, "percent", 100)

    # --- card -----------------------------------------------------------------------------

    @staticmethod
    def _command(link: CardLink, apdu: bytes) -> bytes:
        data, sw = link.transmit(apdu)
        if sw != 0x9000:
            raise TapRefused(f"card answered {sw:04X}", sw)
        return data

    def _select(self, link: CardLink) -> None:
        _data, sw = link.transmit(_apdu("00A40400", PURSE_AID))
        if sw in (0x6A81, 0x9303):
            raise TapRefused("card application blocked", sw)
        if sw != 0x9000:
            raise TapRefused(f"not a citizen card ({sw:04X})", sw)

    def _block(self, link: CardLink, asn: bytes) -> None:
        """APPLICATION BLOCK (reference/pboc.md §6.5) with the PSAM's maintenance MAC."""
        challenge = self._command(link, bytes.fromhex("0084000004"))
        self._command(link, self.psam.block_command(asn, challenge[:4]))

    def _initialize(self, link: CardLink, p1: int, amount: int) -> tuple[int, int, int, int, bytes]:
        """INITIALIZE FOR PURCHASE/CAPP: (balance, offline counter, key version, algorithm, random)."""
        data = self._command(
            link,
            _apdu(
                f"8050{p1:02X}02", b"\x01" + amount.to_bytes(4, "big") + self.psam.terminal_no, 0x0F
            ),
        )
        return (
            int.from_bytes(data[0:4], "big"),
            int.from_bytes(data[4:6], "big"),
            data[9],
            data[10],
            data[11:15],
        )

    def _recover_gray(self, link: CardLink, asn: str) -> dict[str, Any] | None:
        """Settle this card's gray record with GET TRANSACTION PROVE (reference/pboc.md §6.4)."""
        gray = self.state.gray.pop(asn, None)
        if gray is None:
            return None
        _balance, counter, _kv, _alg, _random = self._initialize(link, 0x01, 0)
        self._select(link)  # drop the INITIALIZE session
        waiting = next((i for i, r in enumerate(self.state.pending) if r is gray), None)
        if counter != gray["offline_counter"] + 1:
            # The debit never happened: a gray record not yet uploaded is simply dropped (an
            # uploaded one stays held at the host until settlement reads the card chain).
            if waiting is not None:
                del self.state.pending[waiting]
            return None
        proof = self._command(
            link, _apdu(f"805A00{gray['tx_type']:02X}", counter.to_bytes(2, "big"), 0x08)
        )
        recovered = dict(gray, tac=proof[4:8].hex().upper(), gray=False)
        if waiting is not None:
            self.state.pending[waiting] = recovered
        else:
            self.state.pending.append(recovered)
        return recovered

    def purchase(
        self,
        link: CardLink,
        *,
        amount_for: Callable[
            [str, str, list[bytes]], tuple[int, int, dict[str, Any] | None, bytes | None]
        ],
        capp_tag: int | None,
        tear: bool = False,
    ) -> TapResult:
        """One tap. ``amount_for(asn, card_type, capp_records)`` gives (amount, fare, compound
        summary for the upload, new compound record or None)."""
        self._select(link)
        ef0015 = self._command(link, bytes.fromhex("00B0950000"))
        asn_bytes, card_type = ef0015[12:20], f"{ef0015[28]:02X}"
        asn = asn_bytes.hex().upper()
        if asn in self.state.blacklist:
            self._block(link, asn_bytes)
            raise TapRefused("card on the blacklist: blocked")
        recovered = self._recover_gray(link, asn)
        if recovered is not None or asn in self.state.gray:
            self._select(link)
        capp_records: list[bytes] = []
        if capp_tag is not None:
            capp_records = self._read_capp(link)
        amount, fare, compound, capp_record = amount_for(asn, card_type, capp_records)
        p1 = 0x03 if capp_tag is not None else 0x01
        tx_type = TX_CAPP if capp_tag is not None else TX_PURCHASE
        balance, counter, key_version, algorithm, random = self._initialize(link, p1, amount)
        if balance < amount:  # pragma: no cover - the card already refused with 9401
            raise TapRefused("balance too low", 0x9401)
        dt14 = self.clock().astimezone(LOCAL_TZ).strftime("%Y%m%d%H%M%S")
        sam_in = (
            random + counter.to_bytes(2, "big") + amount.to_bytes(4, "big") + bytes((tx_type,))
            + bytes.fromhex(dt14) + bytes((key_version, algorithm)) + asn_bytes
        )  # fmt: skip
        sam_out = _sam(self.psam, _apdu("80700000", sam_in, 0x08))
        serial, mac1 = int.from_bytes(sam_out[0:4], "big"), sam_out[4:8]
        if capp_tag is not None and capp_record is not None:
            self._command(link, _apdu(f"80DC{capp_tag:02X}B8", capp_record))
        record: dict[str, Any] = {
            "asn": asn,
            "card_type": card_type,
            "tx_type": tx_type,
            "offline_counter": counter,
            "balance_before": balance,
            "amount": amount,
            "fare": fare,
            "terminal_no": self.terminal_no,
            "terminal_serial": serial,
            "datetime": dt14,
            "key_version": key_version,
            "gray": False,
        }
        if compound is not None:
            record["compound"] = compound
        debit = _apdu("80540100", serial.to_bytes(4, "big") + bytes.fromhex(dt14) + mac1, 0x08)
        try:
            if tear:
                tear_card = getattr(getattr(link, "card", None), "tear_next_commit", None)
                if tear_card is not None:
                    tear_card()
            answer = self._command(link, debit)
        except CardRemoved:
            gray = dict(record, gray=True, tac=None)
            self.state.gray[asn] = gray
            self.state.pending.append(gray)
            raise TapRefused("card pulled during the debit: gray record kept") from None
        tac, mac2 = answer[0:4], answer[4:8]
        _sam(self.psam, _apdu("80720000", mac2))
        record["tac"] = tac.hex().upper()
        self.state.pending.append(record)
        return TapResult(asn, amount, fare, balance - amount, record, recovered)

    def _read_capp(self, link: CardLink) -> list[bytes]:
        records: list[bytes] = []
        for n in range(1, 11):
            data, sw = link.transmit(bytes((0x00, 0xB2, n, (0x17 << 3) | 0x04, 0x00)))
            if sw != 0x9000:
                break
            records.append(data)
        return records


def dev_signed_record(
    *,
    asn: str,
    offline_counter: int,
    balance_before: int,
    amount: int,
    terminal_no: str,
    terminal_serial: int,
    dt14: str,
    tx_type: int = TX_PURCHASE,
) -> dict[str, Any]:
    """An upload record with the TAC a development card would compute (reference/pboc.md §3.2).

    For load generators (``bench/uploads.py``), which need many genuine records faster than
    tapping virtual cards allows; the TAC key is ``DTK_L ⊕ DTK_R`` of the development DTK.
    """
    from hsm_sim import pboc
    from terminals.devices import dev_keys

    dtk = dev_keys.card_key(dev_keys.MTK, bytes.fromhex(asn))
    tac = pboc.purchase_tac(dtk, amount, tx_type, bytes.fromhex(terminal_no), terminal_serial, dt14)
    return {
        "asn": asn,
        "card_type": "00",
        "tx_type": tx_type,
        "offline_counter": offline_counter,
        "balance_before": balance_before,
        "amount": amount,
        "fare": amount,
        "terminal_no": terminal_no,
        "terminal_serial": terminal_serial,
        "datetime": dt14,
        "key_version": 1,
        "tac": tac.hex().upper(),
        "gray": False,
    }
