"""The personalization APDU sequence of DESIGN §6.2, keys computed in the test (the HSM's role)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardsvc.reader.errors import (
    ConditionsNotSatisfied,
    SecureMessagingMacInvalid,
    SecurityNotSatisfied,
)
from cardsvc.reader.link import CardLink, InProcessLink, command
from hsm_sim import pboc
from terminals.devices import dev_keys
from terminals.devices.card import (
    VirtualCard,
    holder_info,
    make_blank_card,
    public_info,
    ss_card_info,
    ss_holder_info,
)
from terminals.devices.psam import Psam
from tests.conftest_pcsc import Connect
from tests.terminals.devices.flows import PURSE, SS, H, apdu, challenge, dtk, purchase

CHIP = H("86A1000000004711")
CARD_NO = "3211000000000021"
ASN = H(CARD_NO)
KT = pboc.diversify(dev_keys.MTRK, CHIP)


def external_authenticate(link: CardLink, kt: bytes = KT) -> None:
    r = challenge(link, 8)
    command(link, apdu("00820000", pboc.tdes_encrypt(kt, r)))


def write_key(link: CardLink, key_id: int, key: bytes, kt: bytes = KT) -> None:
    block = pboc.wrap_key_block(kt, key_id, 1, 0, key)
    header = bytes((0x84, 0xD4, 0x00, key_id, len(block) + 4))
    mac = pboc.mac4(kt, header + block, pboc.secure_messaging_iv(challenge(link)))
    command(link, header + block + mac)


def update_binary(link: CardLink, sfi: int, data: bytes, offset: int = 0) -> None:
    header = bytes((0x04, 0xD6, 0x80 | sfi, offset, len(data) + 4))
    mac = pboc.mac4(KT, header + data, pboc.secure_messaging_iv(challenge(link)))
    command(link, header + data + mac)


def personalize(link: CardLink) -> dict[str, bytes]:
    files = {
        "0015": public_info(ASN, city_code="3211", start="20250101", expiry="20351231"),
        "0016": holder_info("李四", "321102198805051234"),
        "EF05": ss_card_info(
            "S00000021", region="321100", issue_date="20250101", expiry="20351231"
        ),
        "EF06": ss_holder_info("321102198805051234", "李四", sex="1", birth_date="19880505"),
    }
    assert link.atr()[-8:] == CHIP  # the chip serial is the tail of the ATR
    command(link, PURSE)
    external_authenticate(link)
    for key_id, key in dev_keys.card_keys(ASN).items():
        write_key(link, key_id, key)
    update_binary(link, 0x15, files["0015"])
    update_binary(link, 0x16, files["0016"])
    command(link, SS)
    update_binary(link, 0x05, files["EF05"])
    update_binary(link, 0x06, files["EF06"])
    command(link, H("80EE000000"))
    return files


def test_full_personalization_then_purchase(connect: Connect, tmp_path: Path) -> None:
    card = make_blank_card(CHIP, state_path=tmp_path / "blank.json")
    psam = Psam.dev("321100000009")
    with connect(card) as link:
        files = personalize(link)
        with pytest.raises(ConditionsNotSatisfied) as after:  # transport key disabled
            write_key(link, 0x02, bytes(16))
        assert after.value.sw == 0x6985
        command(link, SS)
        assert command(link, H("00B0850000")) == files["EF05"]
        assert command(link, H("00B0860000")) == files["EF06"]
        serial, tac, _mac2 = purchase(link, psam, 0)
        assert command(link, H("00B0960000")) == files["0016"]
    assert tac == pboc.purchase_tac(dtk(ASN), 0, 0x06, psam.terminal_no, serial, "20250102083000")
    reloaded = VirtualCard.load(tmp_path / "blank.json")
    assert reloaded.state.transport_key is None
    assert reloaded.state.keys[dev_keys.KEY_DTK].value == dev_keys.card_key(dev_keys.MTK, ASN)


def test_personalization_guards() -> None:
    card = make_blank_card(CHIP)
    with InProcessLink(card) as link:
        command(link, PURSE)
        with pytest.raises(SecurityNotSatisfied):  # WRITE KEY before EXTERNAL AUTHENTICATE
            write_key(link, 0x02, bytes(16))
        with pytest.raises(SecurityNotSatisfied):  # plain UPDATE BINARY is refused
            command(link, apdu("00D69500", bytes(30)))
        with pytest.raises(SecurityNotSatisfied) as bad_auth:
            external_authenticate(link, kt=bytes(16))
        assert bad_auth.value.sw == 0x6300
        external_authenticate(link)
        with pytest.raises(SecureMessagingMacInvalid):
            write_key(link, 0x02, bytes(16), kt=bytes((KT[0] ^ 0x02,)) + KT[1:])
        with pytest.raises(ConditionsNotSatisfied):  # SM without a fresh challenge
            command(link, apdu("04D69500", bytes(8)))
        assert (
            link.transmit(apdu("80500102", b"\x01" + bytes(10), 0x0F))[1] == 0x9403
        )  # no keys yet
        write_key(link, 0x02, bytes(range(16)))  # repeatable before END PERSONALIZATION
        write_key(link, 0x02, bytes(range(1, 17)))
    assert card.state.keys[0x02].value == bytes(range(1, 17))
    assert card.state.transport_key == KT
