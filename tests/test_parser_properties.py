"""Property-based tests for the parsers at the edges: whatever arrives, each answers with a
value or its own clear error, never a crash (a 500, a dead card), and valid input round-trips."""

from __future__ import annotations

import contextlib
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cardsvc.residents.idnumber import InvalidResidentId, check_char, parse_resident_id
from cardsvc.settings import DEFAULT_TIMEZONE
from terminals.devices.apdu import Apdu, StatusError
from terminals.devices.card import make_dev_personalized_card
from terminals.uploads.service import FIELDS, RecordInvalid, parse_local, parse_record

LOCAL_TZ = ZoneInfo(DEFAULT_TIMEZONE)
TODAY = date.today()

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


RECORD_FIELDS = FIELDS - {"gray", "compound"}


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    balance = draw(st.integers(0, 0xFFFFFFFF))
    amount = draw(st.integers(0, balance))
    moment = draw(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)))
    return {
        "asn": draw(st.from_regex(r"\A[0-9A-F]{16}\Z")),
        "card_type": draw(st.from_regex(r"\A\d{2}\Z")),
        "tx_type": draw(st.sampled_from([6, 9])),
        "offline_counter": draw(st.integers(0, 0xFFFF)),
        "balance_before": balance,
        "amount": amount,
        "fare": draw(st.integers(amount, 0xFFFFFFFF)),
        "terminal_no": draw(st.from_regex(r"\A\d{12}\Z")),
        "terminal_serial": draw(st.integers(0, 0xFFFFFFFF)),
        "datetime": moment.strftime("%Y%m%d%H%M%S"),
        "key_version": draw(st.integers(1, 255)),
        "tac": draw(st.from_regex(r"\A[0-9A-F]{8}\Z")),
        "gray": False,
    }


class TestUploadRecordParser:
    @FAST
    @given(valid_records())
    def test_valid_records_parse_to_the_same_values(self, raw: dict[str, Any]) -> None:
        parsed = parse_record(raw, LOCAL_TZ)
        assert parsed.asn == raw["asn"]
        assert parsed.amount == raw["amount"]
        assert parsed.offline_counter == raw["offline_counter"]
        assert parsed.tac == raw["tac"]
        assert parsed.tx_time.astimezone(LOCAL_TZ).strftime("%Y%m%d%H%M%S") == raw["datetime"]

    @FAST
    @given(valid_records(), st.sampled_from(sorted(RECORD_FIELDS)), json_values)
    def test_any_field_value_is_parsed_or_refused_clearly(
        self, raw: dict[str, Any], field: str, value: Any
    ) -> None:
        raw[field] = value
        with contextlib.suppress(RecordInvalid):
            parse_record(raw, LOCAL_TZ)

    @FAST
    @given(json_values)
    def test_arbitrary_json_is_refused_clearly(self, raw: Any) -> None:
        with pytest.raises(RecordInvalid):
            parse_record(raw, LOCAL_TZ)

    @FAST
    @given(valid_records(), st.sampled_from(["amount", "fare", "balance_before"]))
    def test_money_is_never_a_float_or_bool(self, raw: dict[str, Any], field: str) -> None:
        for bad in (float(raw[field]), True, str(raw[field])):
            raw[field] = bad
            with pytest.raises(RecordInvalid):
                parse_record(raw, LOCAL_TZ)


class TestLocalTime:
    @FAST
    @given(st.text(alphabet="0123456789", min_size=14, max_size=14))
    def test_fourteen_digits_are_a_time_or_refused(self, dt14: str) -> None:
        try:
            moment = parse_local(dt14, LOCAL_TZ)
        except RecordInvalid:
            return
        assert moment.tzinfo is UTC
        local = moment.astimezone(LOCAL_TZ)
        assert f"{local.year:04d}{local:%m%d%H%M%S}" == dt14

    @FAST
    @given(st.text(max_size=20))
    def test_any_text_is_a_time_or_refused(self, text: str) -> None:
        with contextlib.suppress(RecordInvalid):
            parse_local(text, LOCAL_TZ)

    def test_shanghai_is_eight_hours_ahead(self) -> None:
        assert parse_local("20261123080000", LOCAL_TZ) == datetime(2026, 11, 23, tzinfo=UTC)


class TestApduParser:
    @FAST
    @given(st.binary(max_size=300))
    def test_any_bytes_parse_or_give_wrong_length(self, raw: bytes) -> None:
        if len(raw) < 4 or (len(raw) > 5 and not (raw[4] and len(raw) - 5 - raw[4] in (0, 1))):
            with pytest.raises(StatusError) as refused:
                Apdu.parse(raw)
            assert refused.value.sw == 0x6700
            return
        apdu = Apdu.parse(raw)
        assert bytes((apdu.cla, apdu.ins, apdu.p1, apdu.p2)) == raw[:4]

    @FAST
    @given(
        st.binary(min_size=4, max_size=4),
        st.binary(min_size=1, max_size=255),
        st.none() | st.integers(0, 255),
    )
    def test_case_3_and_4_round_trip(self, header: bytes, data: bytes, le: int | None) -> None:
        raw = header + bytes([len(data)]) + data + (b"" if le is None else bytes([le]))
        apdu = Apdu.parse(raw)
        assert (apdu.data, apdu.le) == (data, le)


class TestVirtualCardAnswersEverything:
    """A card must answer any command with a status word and never lose its purse."""

    @settings(max_examples=400, deadline=None)
    @given(st.lists(st.binary(max_size=40), min_size=1, max_size=8))
    def test_any_apdu_sequence_gets_status_words_and_keeps_the_balance(
        self, apdus: list[bytes]
    ) -> None:
        card = make_dev_personalized_card("3211000000000018", 5000)
        card.process(bytes.fromhex("00A4040009A00000000386980701"))
        for apdu in apdus:
            answer = card.process(apdu)
            assert len(answer) >= 2
        # No MAC-less command can move money: the balance is intact.
        card.process(bytes.fromhex("00A4040009A00000000386980701"))
        answer = card.process(bytes.fromhex("805C000204"))
        assert answer[-2:] in (b"\x90\x00", b"\x6a\x81", b"\x93\x03", b"\x69\x85")
        if answer[-2:] == b"\x90\x00":
            assert int.from_bytes(answer[:4], "big") == 5000


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    province = draw(st.sampled_from(["11", "31", "32", "44", "65"]))
    rest = draw(st.from_regex(r"\A\d{2}\Z")) + draw(st.sampled_from(["01", "02", "11"]))
    birth = draw(st.dates(min_value=date(1900, 1, 1), max_value=TODAY - timedelta(days=1)))
    first17 = province + rest + birth.strftime("%Y%m%d") + draw(st.from_regex(r"\A\d{3}\Z"))
    return first17 + check_char(first17)


class TestResidentIds:
    @FAST
    @given(resident_ids())
    def test_valid_ids_parse(self, number: str) -> None:
        info = parse_resident_id(number, today=TODAY)
        assert info.number == number
        assert info.sex == ("M" if int(number[16]) % 2 else "F")

    @FAST
    @given(resident_ids(), st.integers(0, 16), st.integers(1, 9))
    def test_one_changed_digit_is_refused(self, number: str, position: int, delta: int) -> None:
        changed = (
            number[:position] + str((int(number[position]) + delta) % 10) + number[position + 1 :]
        )
        with pytest.raises(InvalidResidentId):
            parse_resident_id(changed, today=TODAY)

    @FAST
    @given(st.text(max_size=25))
    def test_any_text_is_an_id_or_refused(self, text: str) -> None:
        with contextlib.suppress(InvalidResidentId):
            parse_resident_id(text, today=TODAY)
