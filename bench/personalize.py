"""Personalization of one card through pcscd + vpcd (DESIGN §13 target: ≤ 1.5 s per card).

Needs pcscd running with the vpcd reader (``pcscd --foreground`` and vsmartcard-vpcd). Builds a
fresh SQLite database by the migrations and uses the in-process HSM, issues N applications, then
personalizes N blank virtual cards; prints APDUs per card and median/max seconds per card, and the
same figures for the in-process link (the raw limit without PC/SC).

    uv run python bench/personalize.py --cards 10
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from cardsvc import clock, migrate
from cardsvc.applications import service as applications
from cardsvc.cache import MemoryCache
from cardsvc.db import create_engine, read_sessions, session_factory, unit_of_work
from cardsvc.hsm.connect import connect_hsm
from cardsvc.personalization.local import PersoResult, personalize
from cardsvc.reader.link import InProcessLink
from cardsvc.reader.pcsc import PcscLink, list_readers, wait_for_card, wait_for_removal
from cardsvc.residents import service as residents
from cardsvc.residents.idnumber import check_char
from cardsvc.resources import Resources
from cardsvc.settings import Mode, Settings
from terminals.devices.card import make_blank_card
from terminals.devices.vpcd import VpcdCard


async def _applications(resources: Resources, n: int, offset: int) -> list[int]:
    ids = []
    for i in range(n):
        first17 = f"321102199001{(offset + i) % 28 + 1:02d}{(offset + i) % 900 + 100:03d}"
        async with unit_of_work(resources.sessions) as session:
            resident = await residents.register(
                session,
                resources.hsm,
                residents.ResidentIn(first17 + check_char(first17), "测试", "13800000000", "x"),
                actor="bench-op",
                today=resources.settings.local_date(clock.now()),
            )
        async with unit_of_work(resources.sessions) as session:
            application = await applications.submit(
                read_sessions(resources.engine),
                session,
                resources.hsm,
                resources.settings,
                resident_id=resident.id,
                card_type=None,
                actor="bench-op",
            )
            await applications.approve(session, application.id, actor="bench-sup")
            await applications.start_production(
                session, resources.settings, application.id, actor="bench-op"
            )
        ids.append(application.id)
    return ids


def _report(label: str, results: list[PersoResult]) -> float:
    times = [r.seconds for r in results]
    median = statistics.median(times)
    print(
        f"{label}: {len(results)} cards, {results[0].apdu_count} APDUs/card, median {median:.3f} s, max {max(times):.3f} s"
    )
    return median


async def main(cards: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="bench-perso-"))
    url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    settings = Settings(
        mode=Mode.development, var_dir=workdir, database_url=url, hsm_url="local://dev"
    )
    engine = create_engine(url)
    hsm = await connect_hsm("local://dev")
    resources = Resources(settings, engine, session_factory(engine), MemoryCache(), hsm)
    try:
        inproc = []
        for i, application in enumerate(await _applications(resources, cards, 0)):
            with InProcessLink(make_blank_card(bytes.fromhex(f"BE{i:014X}"))) as link:
                inproc.append(
                    await personalize(
                        resources,
                        link,
                        application,
                        reader="inproc",
                        actor="bench-op",
                    )
                )
        raw = _report("in-process link", inproc)
        readers = [r for r in list_readers() if r.startswith("Virtual PCD")]
        if not readers:
            print("no vpcd reader in pcscd: start pcscd with vsmartcard-vpcd for the PC/SC figure")
            return
        reader = readers[0]
        pcsc = []
        for i, application in enumerate(await _applications(resources, cards, 1000)):
            slot = VpcdCard(make_blank_card(bytes.fromhex(f"BF{i:014X}")))
            slot.start()
            try:
                wait_for_card(reader, 5.0)
                with PcscLink(reader) as link:
                    pcsc.append(
                        await personalize(
                            resources,
                            link,
                            application,
                            reader=reader,
                            actor="bench-op",
                        )
                    )
            finally:
                slot.stop()
                wait_for_removal(reader, 5.0)
        median = _report("pcscd + vpcd", pcsc)
        print(
            f"target ≤ 1.5 s per card: {'met' if median <= 1.5 else 'MISSED'}; PC/SC / in-process ratio {median / raw:.1f}"
        )
    finally:
        await hsm.close()
        await engine.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=10)
    asyncio.run(main(parser.parse_args().cards))
