"""The channel's parsers and token kinds: activation codes as people type them, the password
rules, and tokens that verify under their own kind's key only."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cardsvc.errors import NotAuthenticated
from cardsvc.selfservice import auth
from cardsvc.settings import Mode, Settings
from cardsvc.staff import auth as staff_auth

SETTINGS = Settings(mode=Mode.development, hsm_url="local://dev")
CARD_NO = "3211000000000013"
codes = st.text(alphabet=auth.CODE_ALPHABET, min_size=12, max_size=12)


@given(codes, st.lists(st.sampled_from(["", " ", "-", "  ", "\t"]), min_size=13, max_size=13),
       st.booleans())  # fmt: skip
def test_a_code_reads_back_however_it_is_typed(code: str, gaps: list[str], lower: bool) -> None:
    typed = "".join(gap + char for gap, char in zip(gaps, code + "", strict=False)) + gaps[-1]
    typed = typed.lower() if lower else typed
    typed = typed.replace("0", "O") if not lower else typed.replace("1", "l")
    assert auth.normalize_code(typed) == code
    assert auth.normalize_code(auth.show_code(code)) == code


@given(st.text(max_size=40))
def test_any_text_is_a_code_or_none(text: str) -> None:
    found = auth.normalize_code(text)
    assert found is None or (
        len(found) == auth.CODE_LENGTH and all(c in auth.CODE_ALPHABET for c in found)
    )


def test_new_codes_are_of_the_alphabet_and_differ() -> None:
    made = {auth.new_code() for _ in range(200)}
    assert len(made) == 200
    assert all(auth.normalize_code(code) == code for code in made)


@given(st.text(max_size=140))
def test_a_password_is_accepted_only_by_the_rules(password: str) -> None:
    try:
        clear = auth.check_password(password, CARD_NO)
    except auth.PasswordRefused:
        text = unicodedata.normalize("NFC", password)
        assert (
            not auth.MIN_PASSWORD_LENGTH <= len(text) <= auth.MAX_PASSWORD_LENGTH
            or any(unicodedata.category(c) == "Cc" for c in text)
            or len(set(text)) < auth.MIN_DISTINCT_CHARACTERS
            or text.isdigit()
            or CARD_NO in text
        )
        return
    assert clear == unicodedata.normalize("NFC", password)
    assert auth.MIN_PASSWORD_LENGTH <= len(clear) <= auth.MAX_PASSWORD_LENGTH


def test_the_same_password_in_either_unicode_form_is_one() -> None:
    composed = "Passwört geheim"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert auth.check_password(decomposed, CARD_NO) == auth.check_password(composed, CARD_NO)


def test_tokens_verify_under_their_own_kind_only() -> None:
    resident = auth.issue_token(SETTINGS, auth.ResidentPrincipal(1, 2, 3, 4))
    assert auth.verify_token(SETTINGS, resident) == auth.ResidentPrincipal(1, 2, 3, 4)
    with pytest.raises(NotAuthenticated):
        staff_auth.verify_token(SETTINGS, resident)
    staff = staff_auth.issue_token(
        SETTINGS, staff_auth.StaffPrincipal(1, "admin", frozenset(staff_auth.Role))
    )
    with pytest.raises(NotAuthenticated):
        auth.verify_token(SETTINGS, staff)


@given(st.text(max_size=200))
def test_any_text_is_a_token_or_refused(text: str) -> None:
    with pytest.raises(NotAuthenticated):
        auth.verify_token(SETTINGS, text)


def test_each_purpose_has_its_own_key() -> None:
    keys = {auth.derived_key(SETTINGS, p) for p in ("token", "activation-code", "rate-limit")}
    assert len(keys) == 3
    secret = SETTINGS.token_secret
    assert secret is not None
    assert secret.get_secret_value().encode() not in keys
