from __future__ import annotations

import io
import json

from cardsvc.logging import configure_logging, get_logger, mask_text


def test_masks_card_numbers_and_resident_ids() -> None:
    text = "card 3211000000000018 holder 11010519491231002X"
    masked = mask_text(text)
    assert "3211000000000018" not in masked
    assert "11010519491231002X" not in masked
    assert "3211********0018" in masked
    assert "110***********002X" in masked  # the birth date and most of the region hidden


def test_json_logs_are_redacted() -> None:
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    log = get_logger("test")
    log.info(
        "card.issued",
        card_no="3211000000000018",
        pin="123456",
        session_key="80A1CC06DFB20A9193B343196DA97098",
        detail={
            "resident_id": "11010519491231002X",
            "note": "key 073CD5EC365EBE9396B3E2F44FCCCEF4",
        },
        amount=1500,
    )
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["event"] == "card.issued"
    assert line["amount"] == 1500
    assert line["pin"] == "[REDACTED]"
    assert line["session_key"] == "[REDACTED]"
    raw = stream.getvalue()
    for secret in (
        "3211000000000018",
        "123456",
        "80A1CC06DFB20A9193B343196DA97098",
        "11010519491231002X",
        "073CD5EC",
    ):
        assert secret not in raw


def test_stdlib_loggers_go_through_the_filter() -> None:
    import logging

    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)
    logging.getLogger("uvicorn.access").info("GET /cards/3211000000000018")
    assert "3211000000000018" not in stream.getvalue()
    assert "3211********0018" in stream.getvalue()
