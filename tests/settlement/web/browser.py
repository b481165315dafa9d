"""A real ``cardsvc serve`` with seeded finance staff, and the system's Chromium driven by
Playwright (never ``playwright install``: the browser is the distribution's ``chromium``).

Without the browser the tests are skipped, unless ``CARDSVC_REQUIRE_BROWSER=1`` (CI), where
they fail."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cardsvc.db import unit_of_work
from cardsvc.ledger import service as ledger
from cardsvc.ledger.models import AccountKind, Side
from cardsvc.ledger.schemas import AccountRef, Entry, PostingRequest
from cardsvc.resources import open_resources
from cardsvc.settings import Mode, Settings
from cardsvc.staff import service as staff
from cardsvc.staff.auth import Role
from tests.processes import run_cardsvc
from tests.serving import dev_env, serving

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUIRE_BROWSER = os.environ.get("CARDSVC_REQUIRE_BROWSER") == "1"
PASSWORD = "finance pages in a browser"
STAFF = {
    "fin_maker": Role.finance,
    "fin_checker": Role.finance,
    "auditor1": Role.auditor,
    "counter1": Role.counter_operator,
}


async def sell_online(
    session: AsyncSession, day: date, merchant_no: str, amount: int, *, key: str
) -> None:
    """An online sale of ``amount`` fen to the merchant on ``day`` (what settlement clears)."""
    await ledger.post(
        session,
        PostingRequest(
            idempotency_key=key,
            tx_type="online_purchase",
            clearing_date=day,
            entries=[
                Entry(AccountRef(AccountKind.bank, "test"), Side.debit, amount),
                Entry(AccountRef(AccountKind.merchant_pending, merchant_no), Side.credit, amount),
            ],
        ),
    )


def settle_with_the_command(server: Server, day: date) -> None:
    """``cardsvc settlement run --date D`` as an operator runs it, against the server's files."""
    done = run_cardsvc(
        "settlement", "run", "--date", day.isoformat(), env=dev_env(server.settings.var_dir)
    )
    assert done.returncode == 0, done.stderr
    assert f"{day.isoformat()} settled" in done.stdout


def no_browser(reason: str) -> None:
    if REQUIRE_BROWSER:
        pytest.fail(f"the browser tests cannot run: {reason}")
    pytest.skip(f"no browser: {reason}")


@dataclass
class Server:
    base: str
    settings: Settings

    def run(self, work: Any) -> Any:
        """Run ``work(session, resources)`` in a unit of work of its own, against the server's
        database (what the seeding and the checks use)."""

        async def go() -> Any:
            async with (
                open_resources(self.settings) as resources,
                unit_of_work(resources.sessions) as session,
            ):
                return await work(session, resources)

        # In a thread of its own: the test's thread may have an event loop running.
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Iterator[Server]:
    var_dir = tmp_path_factory.mktemp("finance") / "var"
    # The schema at head already (serve's upgrade finds nothing to do): a copy of the template.
    var_dir.mkdir()
    shutil.copyfile(sqlite_template, var_dir / "cardsvc.db")
    env = dev_env(var_dir)
    with serving(env, ready="/readyz", timeout=300) as base:
        settings = Settings(
            mode=Mode.development, var_dir=var_dir, database_url="", hsm_url="spawn"
        )
        found = Server(base, settings)

        async def seed(session: Any, _resources: Any) -> None:
            for username, role in STAFF.items():
                await staff.create_staff(
                    session, username=username, password=PASSWORD, roles=[role], actor="test"
                )

        found.run(seed)
        yield found


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        no_browser(f"{CHROMIUM} is not installed (apt chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        no_browser(f"playwright is not installed: {exc}")
    with sync_playwright() as driver:
        try:
            browser = driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except Exception as exc:  # whatever stops the launch, CI must see it
            no_browser(f"chromium did not start: {exc}")
        yield browser
        browser.close()


@pytest.fixture
def pages(chromium: Any, server: Server) -> Iterator[Any]:
    """A function making a fresh browser context (its own cookies) per user."""
    contexts: list[Any] = []

    def new_page() -> Any:
        context = chromium.new_context(base_url=server.base, accept_downloads=True)
        contexts.append(context)
        return context.new_page()

    yield new_page
    for context in contexts:
        context.close()


def log_in(page: Any, username: str, password: str = PASSWORD) -> None:
    page.goto("/finance/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login")


def csrf_of(page: Any) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.content())
    assert found, "no CSRF token on the page"
    return found.group(1)
