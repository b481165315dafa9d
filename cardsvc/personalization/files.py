"""Contents of the files written at personalization, in the layouts of our card OS
(reference/pboc.md §6.2 for 0015, §6.3 for 0016; EF05/EF06 as the card OS documents them)."""

from __future__ import annotations

from datetime import date

from cardsvc.cards.models import Card

SS_SPEC_VERSION = b"3.00"
ID_TYPE_RESIDENT_ID = 0x00  # 0016 IdType: 00 = 身份证


def _bcd(digits: str) -> bytes:
    return bytes.fromhex(digits)


def _fixed(text: str, size: int, encoding: str) -> bytes:
    raw = text.encode(encoding)
    if len(raw) > size:
        raise ValueError(f"a field of {size} bytes cannot hold {len(raw)} bytes")
    return raw + bytes(size - len(raw))


def _ymd(day: date) -> str:
    return day.strftime("%Y%m%d")


def public_info(card: Card, *, start: date, expiry: date) -> bytes:
    """EF 0015, 30 B, 住建部 layout (§6.2): IssuerCode(2) CityCode(2) Industry(2) RFU(2)
    AppType(1) AppVersion(1) Interop(2) ASN(8) Start(4) Expiry(4) MainType(1) SubType(1).
    MainType carries the fare concession code so terminals apply it offline."""
    city = card.card_no[:4]
    data = (
        _bcd(city) + _bcd(city) + bytes(2) + bytes(2) + b"\x01\x01" + bytes(2)
        + bytes.fromhex(card.asn) + _bcd(_ymd(start)) + _bcd(_ymd(expiry))
        + bytes.fromhex(card.concession_code) + b"\x00"
    )  # fmt: skip
    assert len(data) == 30  # noqa: S101 - layout invariant
    return data


def holder_info(card: Card, *, name: str, resident_id: str) -> bytes:
    """EF 0016, 55 B (§6.3): CardType(1) StaffFlag(1) Name(20, GBK) IdNumber(32) IdType(1)."""
    return (
        bytes.fromhex(card.concession_code) + b"\x00" + _fixed(name, 20, "gbk")
        + _fixed(resident_id, 32, "ascii") + bytes((ID_TYPE_RESIDENT_ID,))
    )  # fmt: skip


def ss_card_no(card: Card) -> str:
    """The 9-character social-security card number printed on the card: S + last 8 digits."""
    return "S" + card.card_no[-8:]


def ss_card_info(card: Card, *, start: date, expiry: date) -> bytes:
    """EF05, 32 B: SSCardNo(9) CardType(1: 02 citizen card) IssuerRegion(6) IssueDate(4 BCD)
    ExpiryDate(4 BCD) SpecVersion(4) RFU(4)."""
    region = card.card_no[:4] + "00"
    return (
        _fixed(ss_card_no(card), 9, "ascii") + b"\x02" + _fixed(region, 6, "ascii")
        + _bcd(_ymd(start)) + _bcd(_ymd(expiry)) + SS_SPEC_VERSION + bytes(4)
    )  # fmt: skip


def ss_holder_info(*, resident_id: str, name: str, sex: str, birth_date: date) -> bytes:
    """EF06, 56 B: ResidentId(18) Name(30, GBK) Sex(1: "1" male, "2" female, GB/T 2261.1)
    BirthDate(4 BCD) RFU(3)."""
    return (
        _fixed(resident_id, 18, "ascii") + _fixed(name, 30, "gbk") + (b"1" if sex == "M" else b"2")
        + _bcd(_ymd(birth_date)) + bytes(3)
    )  # fmt: skip


def decode_text(raw: bytes, encoding: str) -> str:
    return raw.rstrip(b"\x00").decode(encoding)
