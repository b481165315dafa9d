"""Known-answer tests for every PBOC primitive (reference/pboc.md §7)."""

from __future__ import annotations

import pytest

from hsm_sim import pboc

H = bytes.fromhex

# §7.1 real card, load (Changsha 住建部 card, ASN 4100000089999985)
DLK_71 = H("374598B5C0B0EAE1E1D06609AC5BB369")
DTK_71 = H("CAA6025290114BFCC3C9043F70F7A07A")
TERM_71 = H("000001000050")


class TestRealCardLoad:
    def test_session_key(self) -> None:
        assert pboc.load_session_key(DLK_71, H("CDEF4F20"), 0).hex().upper() == "3C05F429713D0188"

    def test_mac1(self) -> None:
        sk = pboc.load_session_key(DLK_71, H("CDEF4F20"), 0)
        assert pboc.load_mac1(sk, 0, 0x1C37, 0x02, TERM_71).hex().upper() == "06B1BEF5"

    def test_mac2(self) -> None:
        sk = pboc.load_session_key(DLK_71, H("CDEF4F20"), 0)
        assert (
            pboc.load_mac2(sk, 0x1C37, 0x02, TERM_71, "20140825103100").hex().upper() == "0641DCD8"
        )

    def test_tac_key(self) -> None:
        assert pboc.tac_key(DTK_71).hex().upper() == "096F066DE0E6EB86"

    def test_tac(self) -> None:
        tac = pboc.load_tac(DTK_71, 0x1C37, 0, 0x1C37, 0x02, TERM_71, "20140825103100")
        assert tac.hex().upper() == "ED0F8755"


# §7.2 real card, compound purchase with the 住建部 auth code
DPK_72 = H("A338D92A10C8285411E761445C831C22")
TERM_72 = H("000000000001")


class TestRealCardCompoundPurchase:
    def session_key(self) -> bytes:
        return pboc.purchase_session_key(DPK_72, H("9AC87503"), 0, 1)

    def test_session_key(self) -> None:
        assert self.session_key().hex().upper() == "45B5E6403E9995A8"

    def test_mac1_with_auth_code(self) -> None:
        mac1 = pboc.purchase_mac1(
            self.session_key(), 0x1C37, 0x09, TERM_72, "20110919204812", H("8588D32B7688D32B76")
        )
        assert mac1.hex().upper() == "303D735D"

    def test_mac1_without_auth_code(self) -> None:
        mac1 = pboc.purchase_mac1(self.session_key(), 0x1C37, 0x09, TERM_72, "20110919204812")
        assert mac1.hex().upper() == "CD573164"

    def test_mac2(self) -> None:
        assert pboc.purchase_mac2(self.session_key(), 0x1C37).hex().upper() == "350AC480"

    def test_tac(self) -> None:
        tac = pboc.purchase_tac(DTK_71, 0x1C37, 0x09, TERM_72, 1, "20110919204812")
        assert tac.hex().upper() == "44A8E04A"


KEY_73 = H("11223344556677888877665544332211")


class TestPublishedLoadExample:
    def test_vector(self) -> None:
        sk = pboc.load_session_key(KEY_73, H("11223344"), 0)
        assert sk.hex().upper() == "9B1D924E05595603"
        assert pboc.load_mac1(sk, 0, 0x1000, 0x01, H("001122334455")).hex().upper() == "2988AE5A"
        mac2 = pboc.load_mac2(sk, 0x1000, 0x01, H("001122334455"), "20111221214822")
        assert mac2.hex().upper() == "3A845BF0"


class TestPublishedPurchaseExample:
    def test_vector(self) -> None:
        sk = pboc.purchase_session_key(KEY_73, H("11223344"), 0, 1)
        assert sk.hex().upper() == "003238ABC57659DD"
        mac1 = pboc.purchase_mac1(sk, 0x1000, 0x06, H("001122334455"), "20120229135100")
        assert mac1.hex().upper() == "F15CAB75"
        assert pboc.purchase_mac2(sk, 0x1000).hex().upper() == "56988A13"


class TestSelfComputedRegression:
    """§7.5: not externally confirmed; pins our own diversification against regressions."""

    ASN = H("4100000089999985")

    def test_one_level(self) -> None:
        assert pboc.diversify(KEY_73, self.ASN).hex().upper() == "A0068F366D0535ADF42057760F84B2F5"

    def test_group_level(self) -> None:
        group = pboc.group_factor("4100")
        assert pboc.diversify(KEY_73, group).hex().upper() == "44AF3E75AE1A9A17A143BE31F61DE575"

    def test_two_levels_and_purchase(self) -> None:
        dk2 = pboc.diversify_path(KEY_73, pboc.group_factor("4100"), self.ASN)
        assert dk2.hex().upper() == "454FA373D593BE1854877598907A7458"
        sk = pboc.purchase_session_key(dk2, H("12345678"), 5, 9)
        assert sk.hex().upper() == "E8DA03E676C0032A"
        assert (
            pboc.purchase_mac1(sk, 0x64, 0x06, TERM_71, "20240101120000").hex().upper()
            == "C561F1D5"
        )
        assert pboc.purchase_mac2(sk, 0x64).hex().upper() == "0EBB2BFC"
        assert (
            pboc.purchase_tac(dk2, 0x64, 0x06, TERM_71, 9, "20240101120000").hex().upper()
            == "1D39B170"
        )


class TestPrimitives:
    def test_padding_always_adds_a_block_when_aligned(self) -> None:
        assert pboc.pad_iso9797_m2(bytes(8)) == bytes(8) + H("8000000000000000")
        assert pboc.unpad_iso9797_m2(pboc.pad_iso9797_m2(b"abc")) == b"abc"

    def test_bad_padding_is_refused(self) -> None:
        with pytest.raises(pboc.CryptoInputError):
            pboc.unpad_iso9797_m2(bytes(8))

    def test_key_block_round_trip(self) -> None:
        block = pboc.wrap_key_block(KEY_73, 2, 1, 0, DPK_72)
        assert len(block) == 24
        assert pboc.unwrap_key_block(KEY_73, block) == (2, 1, 0, DPK_72)

    def test_kcv_of_known_key(self) -> None:
        # 3DES of a zero block under 0123456789ABCDEF FEDCBA9876543210 is 08D7B4FB629D0885
        assert pboc.kcv(H("0123456789ABCDEFFEDCBA9876543210")).hex().upper() == "08D7B4"

    def test_degenerate_3des_is_single_des(self) -> None:
        k = H("0123456789ABCDEF")
        assert pboc.tdes_encrypt(k + k, bytes(8)) == pboc.des_encrypt(k, bytes(8))

    @pytest.mark.parametrize("bad", [b"", bytes(7), bytes(24)])
    def test_wrong_key_length(self, bad: bytes) -> None:
        with pytest.raises(pboc.CryptoInputError):
            pboc.mac4(bad, b"x")
