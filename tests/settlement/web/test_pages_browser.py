"""The finance pages in a real browser (Chromium, driven by Playwright) against a real
``cardsvc serve``: sign-in, the breaks inbox, maker-checker resolutions, CSRF, escaping."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from cardsvc.breaks import service as breaks
from cardsvc.breaks.models import BreakKind
from cardsvc.breaks.schemas import BreakRef, NewBreak
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind
from cardsvc.ledger.schemas import AccountRef
from tests.settlement.web.browser import Server, csrf_of, log_in

SCRIPT = "<script>window.pwned = 1</script>"


def open_break(server: Server, amount: int, reason: str, **ref: Any) -> int:
    async def work(session: Any, _resources: Any) -> int:
        return await breaks.open_break(
            session,
            NewBreak(
                kind=BreakKind.gray,
                clearing_date=date(2026, 12, 1),
                reason=reason,
                ref=BreakRef(source="test", **ref),
                amount=amount,
            ),
        )

    result: int = server.run(work)
    return result


def written_off(server: Server) -> int:
    async def work(session: Any, _resources: Any) -> int:
        return await ledger.balance(session, AccountRef(AccountKind.break_written_off))

    result: int = server.run(work)
    return result


def test_log_in_and_out(pages: Any) -> None:
    page = pages()
    page.goto("/finance/breaks")
    assert "/finance/login" in page.url  # no session: to the login page
    log_in(page, "fin_maker", "wrong password")
    assert page.locator("#login-error").is_visible()
    log_in(page, "fin_maker")
    assert page.url.endswith("/finance/breaks")
    assert page.locator("#who").inner_text() == "fin_maker"
    assert page.locator("h1").inner_text() == "差错处理"  # Chinese by default
    page.click("a[lang=en]")
    assert page.locator("h1").inner_text() == "Breaks"
    page.click("a[lang=zh-CN]")
    page.click("#logout")
    assert "/finance/login" in page.url
    page.goto("/finance/breaks")
    assert "/finance/login" in page.url


def test_a_counter_operator_is_not_let_in(pages: Any) -> None:
    page = pages()
    log_in(page, "counter1")
    assert "/finance/login" in page.url
    assert page.locator("#login-error").is_visible()


def test_propose_then_approve_as_another_user(pages: Any, server: Server) -> None:
    break_id = open_break(server, 1234, "gray record held at the bus depot")
    before = written_off(server)
    maker = pages()
    log_in(maker, "fin_maker")
    maker.goto(f"/finance/breaks/{break_id}")
    assert maker.locator("#break-amount").inner_text() == "12.34"
    maker.select_option("#action", "write_off")
    maker.fill("#note", "the passenger could not be traced")
    maker.click("#propose")
    assert maker.locator(".proposal-status").inner_text() == "待复核"
    assert maker.locator("button.approve").count() == 0  # nobody approves their own
    assert written_off(server) == before  # the ledger moves only on approval

    checker = pages()
    log_in(checker, "fin_checker")
    checker.goto(f"/finance/breaks/{break_id}")
    checker.click("button.approve")
    assert checker.locator(".proposal-status").inner_text() == "已通过"
    assert checker.locator("#break-status").inner_text() == "已处理"
    assert checker.locator("#break-resolution").inner_text() == "written_off"
    assert written_off(server) == before + 1234


def test_own_proposal_refused_even_when_posted(pages: Any, server: Server) -> None:
    break_id = open_break(server, 500, "own proposal")
    maker = pages()
    log_in(maker, "fin_maker")
    maker.goto(f"/finance/breaks/{break_id}")
    maker.fill("#note", "write it off")
    maker.click("#propose")
    proposal_id = maker.locator(".proposals tbody tr").first.get_attribute("id").split("-")[1]
    answer = maker.request.post(
        f"/finance/proposals/{proposal_id}/approve", form={"csrf": csrf_of(maker)}
    )
    assert answer.status == 403
    assert "OwnProposal" in answer.text()


def test_an_auditor_cannot_approve(pages: Any, server: Server) -> None:
    break_id = open_break(server, 700, "for the auditor")
    maker = pages()
    log_in(maker, "fin_maker")
    maker.goto(f"/finance/breaks/{break_id}")
    maker.fill("#note", "write it off")
    maker.click("#propose")
    proposal_id = maker.locator(".proposals tbody tr").first.get_attribute("id").split("-")[1]

    auditor = pages()
    log_in(auditor, "auditor1")
    auditor.goto("/finance/approvals")
    assert auditor.locator(f"#proposal-{proposal_id}").is_visible()  # sees it
    assert auditor.locator("button.approve").count() == 0  # no button
    answer = auditor.request.post(
        f"/finance/proposals/{proposal_id}/approve", form={"csrf": csrf_of(auditor)}
    )
    assert answer.status == 403
    auditor.goto(f"/finance/breaks/{break_id}")
    assert auditor.locator(".proposal-status").inner_text() == "待复核"


def test_batch_approval(pages: Any, server: Server) -> None:
    ids = [open_break(server, 100 + n, f"batch {n}") for n in range(3)]
    maker = pages()
    log_in(maker, "fin_maker")
    for break_id in ids:
        maker.goto(f"/finance/breaks/{break_id}")
        maker.fill("#note", "batch write-off")
        maker.click("#propose")
    before = written_off(server)
    checker = pages()
    log_in(checker, "fin_checker")
    checker.goto("/finance/approvals")
    for break_id in ids:
        row = checker.locator("tr", has=checker.locator(f'a[href="/finance/breaks/{break_id}"]'))
        row.locator("input[name=proposal]").check()
    checker.click("#approve-selected")
    assert checker.locator("#decisions li.ok").count() == 3
    assert written_off(server) == before + 100 + 101 + 102
    for break_id in ids:
        checker.goto(f"/finance/breaks/{break_id}")
        assert checker.locator("#break-status").inner_text() == "已处理"


def test_a_form_without_its_csrf_token_is_refused(pages: Any, server: Server) -> None:
    break_id = open_break(server, 300, "csrf")
    page = pages()
    log_in(page, "fin_maker")
    answer = page.request.post(
        f"/finance/breaks/{break_id}/proposals", form={"action": "write_off", "note": "x"}
    )
    assert answer.status == 403
    assert "CsrfRefused" in answer.text()
    answer = page.request.post(
        f"/finance/breaks/{break_id}/proposals",
        form={"action": "write_off", "note": "x", "csrf": "0" * 64},
    )
    assert answer.status == 403
    page.goto(f"/finance/breaks/{break_id}")
    assert page.locator(".proposal-status").count() == 0  # nothing was proposed


def test_script_in_a_break_renders_as_text(pages: Any, server: Server) -> None:
    break_id = open_break(server, 1, SCRIPT, reference=SCRIPT[:64])
    page = pages()
    log_in(page, "fin_maker")
    page.goto(f"/finance/breaks/{break_id}")
    assert page.locator("#break-reason").inner_text() == SCRIPT
    page.goto("/finance/breaks?sort=id&dir=desc")
    assert SCRIPT in page.locator("#breaks").inner_text()
    assert page.evaluate("typeof window.pwned") == "undefined"


def test_filter_page_and_export(pages: Any, server: Server) -> None:
    marker = '=HYPERLINK("http://evil")'
    break_id = open_break(server, 4200, marker, terminal_no="321100000777")
    page = pages()
    log_in(page, "auditor1")
    page.goto("/finance/breaks")
    page.fill("input[name=terminal_no]", "321100000777")
    page.click("#filter")
    assert page.locator("#total").inner_text() == "1"
    with page.expect_download() as caught:
        page.click("#export")
    text = Path(caught.value.path()).read_text(encoding="utf-8-sig")
    lines = text.splitlines()
    assert lines[0].startswith("id,kind,status")
    assert len(lines) == 2
    assert lines[1].startswith(f"{break_id},gray,open,2026-12-01,42.00,")
    assert "'=HYPERLINK" in lines[1]  # escaped: a spreadsheet shows it as text
