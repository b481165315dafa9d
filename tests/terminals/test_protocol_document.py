"""docs/terminal-protocol.md §6.1 lists every response code and record code the host can send to
a terminal, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from terminals.online.messages import MESSAGES
from terminals.online.schemas import ResponseCode
from terminals.uploads.models import ResultCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "terminal-protocol.md"


def answers_table() -> str:
    text = DOC.read_text(encoding="utf-8")
    return text[text.index("### 6.1 Every answer") : text.index("### 6.2 ")]


def test_the_code_table_is_the_codes_the_host_sends() -> None:
    rows = re.findall(r"^\| 200 \| `response_code` `(\d\d)` \| ([^|]+?) \|", answers_table(), re.M)
    documented = dict(rows)
    assert len(rows) == len(documented)
    assert set(documented) == {code.value for code in ResponseCode} == set(MESSAGES)
    # The text an answer carries is the meaning the table gives.
    assert {code: MESSAGES[code] for code in documented} == documented


def test_the_record_codes_are_the_codes_an_upload_answers() -> None:
    documented = re.findall(r"^\| 200 \| record `(\d\d)` \|", answers_table(), re.M)
    # 10 (adjusted in later) is set by settlement, never in an upload answer.
    assert documented == sorted(c.value for c in ResultCode if c is not ResultCode.adjusted)


def test_the_errors_are_the_errors_the_terminal_routes_raise() -> None:
    documented = set(re.findall(r"^\| \d{3} \| `([A-Za-z]+)` \|", answers_table(), re.M))
    from cardsvc import errors
    from terminals.access import errors as access_errors
    from terminals.loads.service import TerminalMayNotLoad

    raised = {
        errors.ValidationFailed, errors.NotFound, errors.Conflict, errors.IdempotencyConflict,
        errors.DependencyUnavailable, access_errors.MacInvalid, access_errors.ReplayRefused,
        access_errors.SignInTimeRefused, access_errors.SessionExpired,
        access_errors.TerminalUnknown, access_errors.PsamMismatch, TerminalMayNotLoad,
    }  # fmt: skip
    edge = {"BodyTooLarge", "RequestValidationFailed", "MethodNotAllowed"}
    assert documented == {cls.__name__ for cls in raised} | edge
