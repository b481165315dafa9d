"""The virtual card's purse through both links (in-process and pcscd+vpcd), with the PSAM."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from cardsvc.reader.errors import (
    ApplicationBlocked,
    CardRemoved,
    ConditionsNotSatisfied,
    CounterExhausted,
    InsufficientBalance,
    MacInvalid,
    ProofUnavailable,
    SecureMessagingMacInvalid,
    WrongState,
)
from cardsvc.reader.link import CardLink, command
from hsm_sim import pboc
from terminals.devices import dev_keys
from terminals.devices.card import Lock, VirtualCard, make_dev_personalized_card
from terminals.devices.psam import Psam
from tests.conftest_pcsc import Connect
from tests.terminals.devices.flows import (
    DT,
    PURSE,
    TERMINAL,
    H,
    apdu,
    challenge,
    debit_apdu,
    dtk,
    init_purchase,
    psam_cmd,
    purchase,
    read_asn,
    sam_mac1,
)

CARD_NO = "3211000000000013"
ASN = H(CARD_NO)


@pytest.fixture
def card(tmp_path: Path) -> VirtualCard:
    return make_dev_personalized_card(CARD_NO, 5000, state_path=tmp_path / "card.json")


@pytest.fixture
def psam() -> Psam:
    return Psam.dev("321100000001")


@pytest.mark.parametrize("auth_code", [False, True], ids=["plain", "auth-code"])
def test_purchase_with_psam(
    connect: Connect, card: VirtualCard, psam: Psam, auth_code: bool
) -> None:
    with connect(card) as link:
        serial, tac, mac2 = purchase(link, psam, 150, auth_code=auth_code)
        assert command(link, H("805C000204")) == (5000 - 150).to_bytes(4, "big")
        log = command(link, apdu("00B201C4", le=0x17))
    # TAC with the DTK the backend derives from MTK (DESIGN §6): it covers no auth code.
    assert tac == pboc.purchase_tac(dtk(ASN), 150, 0x06, TERMINAL, serial, DT)
    assert serial == 1
    assert log == H("00010000000000009606") + TERMINAL + H(DT)
    assert card.state.offline_counter == 1
    assert card.state.proof is not None
    assert card.state.proof.mac == mac2


def test_psam_rejects_a_forged_mac2(psam: Psam, card: VirtualCard) -> None:
    with connect_inprocess(card) as link:
        asn = read_asn(link)
        init = init_purchase(link, 10)
        sam_mac1(psam, init, 10, asn)
    assert psam.process(apdu("80720000", H("00000000"))) == H("9302")


def connect_inprocess(card: VirtualCard) -> CardLink:
    from cardsvc.reader.link import InProcessLink

    return InProcessLink(card)


def test_psam_one_level_uses_its_group_factor(psam: Psam, card: VirtualCard) -> None:
    with connect_inprocess(card) as link:
        asn = read_asn(link)
        init = init_purchase(link, 10)
        serial, mac1 = sam_mac1(psam, init, 10, asn, two_level=False)
        command(link, debit_apdu(serial, mac1))
    assert psam_cmd(psam, H("00B0960006")) == TERMINAL


def test_load(connect: Connect, card: VirtualCard) -> None:
    dlk = dev_keys.card_key(dev_keys.MLK, ASN)
    with connect(card) as link:
        command(link, PURSE)
        r = command(link, apdu("80500002", b"\x01" + (2000).to_bytes(4, "big") + TERMINAL, 0x10))
        balance, counter, random, mac1 = (
            int.from_bytes(r[0:4], "big"),
            int.from_bytes(r[4:6], "big"),
            r[8:12],
            r[12:16],
        )
        sk = pboc.load_session_key(dlk, random, counter)
        assert mac1 == pboc.load_mac1(
            sk, balance, 2000, 0x02, TERMINAL
        )  # the host authenticates the card
        mac2 = pboc.load_mac2(sk, 2000, 0x02, TERMINAL, DT)
        tac = command(link, apdu("80520000", H(DT) + mac2, 0x04))
        assert command(link, H("805C000204")) == (7000).to_bytes(4, "big")
        proof = command(link, apdu("805A0002", (counter + 1).to_bytes(2, "big"), 0x08))
    assert (balance, counter) == (5000, 0)
    assert tac == pboc.load_tac(dtk(ASN), 7000, 0, 2000, 0x02, TERMINAL, DT)
    assert proof == bytes(4) + tac
    assert card.state.load_log[0] == H("0001000000000007D002") + TERMINAL + H(DT)
    assert card.state.offline_counter == 0
    assert card.state.online_counter == 1


def test_load_bad_mac2_and_ceiling(connect: Connect, card: VirtualCard) -> None:
    with connect(card) as link:
        command(link, PURSE)
        command(link, apdu("80500002", b"\x01" + (10).to_bytes(4, "big") + TERMINAL, 0x10))
        with pytest.raises(MacInvalid):
            command(link, apdu("80520000", H(DT) + H("01020304"), 0x04))
        with pytest.raises(ConditionsNotSatisfied):  # beyond the 1000-yuan ceiling
            command(link, apdu("80500002", b"\x01" + (100_000).to_bytes(4, "big") + TERMINAL, 0x10))
    assert card.state.balance == 5000
    assert card.state.online_counter == 0


def test_wrong_mac1_and_insufficient_balance(
    connect: Connect, card: VirtualCard, psam: Psam
) -> None:
    with connect(card) as link:
        asn = read_asn(link)
        init = init_purchase(link, 100)
        serial, mac1 = sam_mac1(psam, init, 100, asn)
        with pytest.raises(MacInvalid) as bad:
            command(link, debit_apdu(serial, bytes(b ^ 1 for b in mac1)))
        assert bad.value.sw == 0x9302
        with pytest.raises(WrongState):  # the failed DEBIT ended the transaction
            command(link, debit_apdu(serial, mac1))
        with pytest.raises(InsufficientBalance):
            init_purchase(link, 5001)
        init_purchase(link, 5000)  # the whole balance is fine
    assert card.state.balance == 5000
    assert card.state.offline_counter == 0
    assert card.state.mac_errors == 1


def test_three_bad_macs_block_the_purse(card: VirtualCard, psam: Psam) -> None:
    with connect_inprocess(card) as link:
        asn = read_asn(link)
        sws = []
        for _ in range(3):
            init = init_purchase(link, 1)
            serial, _mac1 = sam_mac1(psam, init, 1, asn)
            sws.append(link.transmit(debit_apdu(serial, bytes(4)))[1])
        assert sws == [0x9302, 0x9302, 0x6985]
        assert link.transmit(PURSE)[1] == 0x6A81
    assert card.state.lock is Lock.TEMPORARY


def test_torn_debit_recovered_with_transaction_prove(
    connect: Connect, reconnect: Callable[[VirtualCard], CardLink], card: VirtualCard, psam: Psam
) -> None:
    with connect(card) as link:
        asn = read_asn(link)
        init = init_purchase(link, 300)
        serial, mac1 = sam_mac1(psam, init, 300, asn)
        card.tear_next_commit()
        with pytest.raises(CardRemoved):
            link.transmit(debit_apdu(serial, mac1))
        # Next tap of the same card (reference §6.4): the counter advanced, so the debit happened.
        again = reconnect(card)
        assert read_asn(again) == asn
        after = init_purchase(again, 0)
        assert after.counter == init.counter + 1
        assert after.balance == init.balance - 300
        with pytest.raises(ProofUnavailable):
            command(again, apdu("805A0006", init.counter.to_bytes(2, "big"), 0x08))
        with pytest.raises(ProofUnavailable):
            command(again, apdu("805A0009", after.counter.to_bytes(2, "big"), 0x08))
        proof = command(again, apdu("805A0006", after.counter.to_bytes(2, "big"), 0x08))
    mac2, tac = proof[0:4], proof[4:8]
    psam_cmd(psam, apdu("80720000", mac2))  # MAC2 is genuine
    assert tac == pboc.purchase_tac(dtk(ASN), 300, 0x06, TERMINAL, serial, DT)
    assert (
        VirtualCard.load(card.state_path or Path()).state.balance == 4700
    )  # committed before the tear


def test_capp_compound_purchase(connect: Connect, card: VirtualCard, psam: Psam) -> None:
    record = bytes((0x02, 0x2E, 0x00)) + bytes(range(1, 46))
    with connect(card) as link:
        asn = read_asn(link)
        with pytest.raises(WrongState):  # 80DC without INITIALIZE FOR CAPP (reference §8)
            command(link, apdu("80DC02B8", record))
        init = init_purchase(link, 200, capp=True)
        command(link, apdu("80DC02B8", record))
        assert command(link, apdu("00B202BC", le=0x30)) != record  # cached until DEBIT
        serial, mac1 = sam_mac1(psam, init, 200, asn, tx_type=0x09)
        tac_mac2 = command(link, debit_apdu(serial, mac1))
        stored = command(link, apdu("00B202BC", le=0x30))
        last = command(link, apdu("00B201C4", le=0x17))
    psam_cmd(psam, apdu("80720000", tac_mac2[4:8]))
    assert tac_mac2[0:4] == pboc.purchase_tac(dtk(ASN), 200, 0x09, TERMINAL, serial, DT)
    assert stored == record
    assert last[9] == 0x09
    assert card.state.proof is not None
    assert card.state.proof.tx_type == 0x09


def test_capp_session_refuses_another_initialize(card: VirtualCard) -> None:
    with connect_inprocess(card) as link:
        read_asn(link)
        init_purchase(link, 0, capp=True)
        with pytest.raises(WrongState):
            init_purchase(link, 1)


def test_block_and_unblock_with_secure_messaging(
    connect: Connect, card: VirtualCard, psam: Psam
) -> None:
    with connect(card) as link:
        asn = read_asn(link)
        challenge(link)
        with pytest.raises(SecureMessagingMacInvalid):
            command(link, H("841E000004") + bytes(4))
        command(link, psam.block_command(asn, challenge(link)))
        with pytest.raises(ApplicationBlocked) as blocked:
            command(link, PURSE)
        assert blocked.value.sw == 0x6A81
        with pytest.raises(ApplicationBlocked):
            init_purchase(link, 1)
        assert read_asn_blocked(link) == asn  # reads still work: terminals check the blacklist
        command(link, psam.block_command(asn, challenge(link), unblock=True))
        command(link, PURSE)
        init_purchase(link, 1)
        command(link, psam.block_command(asn, challenge(link), permanent=True))
        assert link.transmit(PURSE)[1] == 0x9303
        with pytest.raises(ApplicationBlocked):
            command(link, psam.block_command(asn, challenge(link), unblock=True))
    assert card.state.lock is Lock.PERMANENT


def read_asn_blocked(link: CardLink) -> bytes:
    return command(link, H("00B0950000"))[12:20]


def test_counter_at_maximum(connect: Connect, tmp_path: Path) -> None:
    card = make_dev_personalized_card(CARD_NO, 100)
    card = VirtualCard(
        dataclasses.replace(card.state, offline_counter=0xFFFF, online_counter=0xFFFF)
    )
    with connect(card) as link:
        read_asn(link)
        with pytest.raises(CounterExhausted) as e:
            init_purchase(link, 1)
        assert e.value.sw == 0x9402
        with pytest.raises(CounterExhausted):
            command(link, apdu("80500002", b"\x01" + (1).to_bytes(4, "big") + TERMINAL, 0x10))


def test_state_survives_reload(card: VirtualCard, psam: Psam) -> None:
    with connect_inprocess(card) as link:
        purchase(link, psam, 70)
        purchase(link, psam, 30)
    assert card.state_path is not None
    reloaded = VirtualCard.load(card.state_path)
    assert reloaded.state == card.state
    assert reloaded.state.balance == 4900
    assert len(reloaded.state.purchase_log) == 2
    assert [p.name for p in card.state_path.parent.iterdir()] == ["card.json"]  # no temp files left
    with connect_inprocess(reloaded) as link:
        assert read_asn(link) == ASN
        assert init_purchase(link, 0).counter == 2


def test_pin(card: VirtualCard) -> None:
    with connect_inprocess(card) as link:
        sws = [link.transmit(apdu("00200000", H("111111")))[1] for _ in range(2)]
        command(link, apdu("00200000", H("123456")))  # resets the tries
        sws += [link.transmit(apdu("00200000", H("111111")))[1] for _ in range(4)]
        sws.append(link.transmit(apdu("00200000", H("123456")))[1])
    assert sws == [0x63C2, 0x63C1, 0x63C2, 0x63C1, 0x63C0, 0x6983, 0x6983]


def test_status_words_for_bad_commands(card: VirtualCard) -> None:
    with connect_inprocess(card) as link:
        command(link, PURSE)
        assert link.transmit(H("80540200"))[1] == 0x6A86
        assert link.transmit(H("0099000000"))[1] == 0x6D00
        assert link.transmit(H("905C000204"))[1] == 0x6E00
        assert link.transmit(H("805C000104"))[1] == 0x6A86
        assert link.transmit(apdu("80500102", b"\x01\x00"))[1] == 0x6700
        assert link.transmit(apdu("80500102", b"\x07" + bytes(10), 0x0F))[1] == 0x9403
        assert link.transmit(apdu("80540100", bytes(15), 0x08))[1] == 0x6901
        assert link.transmit(apdu("00A40000", H("0099")))[1] == 0x6A82
        assert link.transmit(H("00B205C400"))[1] == 0x6A83
        assert link.transmit(H("00D6950001") + b"\x00")[1] == 0x6982
