"""docs/terminal-protocol.md §9.1 lists every response code the host can send, and no other."""

from __future__ import annotations

import re
from pathlib import Path

from terminals.online.messages import MESSAGES
from terminals.online.schemas import ResponseCode

DOC = Path(__file__).resolve().parents[2] / "docs" / "terminal-protocol.md"


def documented_codes() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### 9.1 Response codes") : text.index("### 9.2")]
    return dict(re.findall(r"^\| (\d\d) \| ([^|]+?) \|", section, flags=re.MULTILINE))


def test_the_code_table_is_the_codes_the_host_sends() -> None:
    documented = documented_codes()
    assert set(documented) == {code.value for code in ResponseCode} == set(MESSAGES)
    # The text an answer carries is the meaning the table gives.
    assert {code: MESSAGES[code] for code in documented} == documented
