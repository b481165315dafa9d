"""Schemathesis against ``/openapi.json`` of a real ``cardsvc serve``, as every kind of caller:
each staff role with its own token, two signed-in terminals (a counter and a shop's POS) and the
demo bank, whose every request is signed, a resident with online access (its token on every
request), and no one. It fails when any answer is a 5xx, or
when an operation refuses as invalid most of the requests its published schema admits
(``schemathesis.toml`` beside this file lists the rules no JSON Schema can state).

    uv run python -m tests.fuzz.api [--examples N] [--seed S] [--database-url URL]

The server runs in development mode on a directory of its own (SQLite there, or the PostgreSQL
database given, which must exist and is used as is), with its spawned hsm-sim; the script seeds a
staff account per role, a merchant with both terminals and a resident with an active card and
online access, then runs schemathesis
once per caller, one request at a time. ``.ci/run`` runs it with a small example count.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from cardsvc import clock
from cardsvc.cards import service as cards
from cardsvc.cards.models import CardStatus, CardType
from cardsvc.db import unit_of_work
from cardsvc.residents import service as residents
from cardsvc.resources import open_resources
from cardsvc.selfservice import service as selfservice
from cardsvc.settings import Mode, Settings
from cardsvc.staff import service as staff
from cardsvc.staff.auth import Role
from terminals.registry import service as registry
from terminals.registry.models import MerchantCategory, TerminalKind
from tests.factories import resident_id
from tests.serving import dev_env, serving

# Fails the run on an operation that refuses most of what its schema admits (with the rules no
# JSON Schema can state listed there).
CONFIG = Path(__file__).with_name("schemathesis.toml")
PASSWORD = "fuzzing the whole api"
RESIDENT_PASSWORD = "a resident fuzzing the api"
MERCHANT = "321100000000099"
TERMINALS = {"321100000091": TerminalKind.counter, "321100000092": TerminalKind.pos}
# The administrator goes last: its runs may disable or re-role the other accounts.
ROLES = (Role.auditor, Role.finance, Role.counter_operator, Role.supervisor, Role.administrator)


@dataclass
class Caller:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    # The operations this caller can reach past authentication (all of them when empty).
    operations: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    caller: str
    code: int
    seconds: float
    summary: str


def server_env(var_dir: Path, database_url: str | None) -> dict[str, str]:
    # Failed logins from this one address are the fuzzer's: do not lock it out of the rest.
    env = dev_env(
        var_dir,
        CARDSVC_STAFF_MAX_FAILED_LOGINS_PER_ADDRESS="10000",
        CARDSVC_RESIDENT_MAX_FAILURES_PER_ADDRESS="10000",
        CARDSVC_RESIDENT_MAX_FAILURES_PER_CARD="10000",
    )
    if database_url:
        env["CARDSVC_DATABASE_URL"] = database_url
    return env


@dataclass(frozen=True)
class Seeded:
    card_no: str  # the resident's active card
    activation_code: str  # its online access, activated by ``callers``


async def seed(settings: Settings) -> Seeded:
    """A staff account per role, the merchant and its two terminals, a resident with an active
    card and an activation code for its online access."""
    async with open_resources(settings) as resources:
        async with unit_of_work(resources.sessions) as session:
            for role in ROLES:
                await staff.create_staff(
                    session, username=role.value, password=PASSWORD, roles=[role], actor="fuzz"
                )
            await registry.create_merchant(
                session, merchant_no=MERCHANT, name="Fuzz shop", category=MerchantCategory.retail,
                settlement_account="6222020000000000099", actor="fuzz",
            )  # fmt: skip
            for terminal_no, kind in TERMINALS.items():
                await registry.create_terminal(
                    session, terminal_no=terminal_no, psam_no="50" + terminal_no + "00",
                    merchant_no=MERCHANT, kind=kind, actor="fuzz",
                )  # fmt: skip
        async with unit_of_work(resources.sessions) as session:
            resident = await residents.register(
                session,
                resources.hsm,
                residents.ResidentIn(resident_id(), "测试", "13800000000", "测试路1号"),
                actor="fuzz",
                today=settings.local_date(clock.now()),
            )
            card = await cards.allocate(
                session, settings, resident_id=resident.id, card_type=CardType.standard,
                actor="fuzz",
            )  # fmt: skip
            # Issued as the counter would hand it over (personalization is not what is fuzzed).
            card.status = CardStatus.active
            card.issued_at = clock.now()
            card.expires_on = settings.local_date(clock.now() + timedelta(days=3650))
            await session.flush()
            issued = await selfservice.issue_code(session, settings, card.card_no, actor="fuzz")
        return Seeded(card.card_no, issued.code)


def admitted(spec: dict[str, Any], kind: str, role: Role | None = None) -> list[str]:
    """The operation ids that admit callers of ``kind`` (and ``role``), from ``x-admits``."""
    found = []
    for operations in spec["paths"].values():
        for operation in operations.values():
            admits = operation.get("x-admits", {})
            roles = admits.get("roles", [])
            if admits.get("kind") == kind and (role is None or not roles or role.value in roles):
                found.append(operation["operationId"])
    return found


def callers(base_url: str, seeded: Seeded) -> list[Caller]:
    """No one (every operation), each terminal, the bank, the resident, each staff role (the
    operations each may call)."""
    spec = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    found = [Caller("anonymous")]
    for terminal_no, kind in TERMINALS.items():
        found.append(
            Caller(
                f"terminal {terminal_no} ({kind.value})",
                env={
                    "SCHEMATHESIS_HOOKS": "tests.fuzz.signing",
                    "CARDSVC_FUZZ_BASE_URL": base_url,
                    "CARDSVC_FUZZ_TERMINAL": terminal_no,
                },
                operations=admitted(spec, "terminal"),
            )
        )
    found.append(
        Caller(
            "the demo bank",
            env={"SCHEMATHESIS_HOOKS": "tests.fuzz.signing", "CARDSVC_FUZZ_BANK": "DEMO"},
            operations=admitted(spec, "bank"),
        )
    )
    activated = httpx.post(
        f"{base_url}/api/v1/self-service/activate",
        json={
            "card_no": seeded.card_no,
            "activation_code": seeded.activation_code,
            "password": RESIDENT_PASSWORD,
        },
        timeout=30,
    )
    activated.raise_for_status()
    found.append(
        Caller(
            "the resident",
            env={
                "SCHEMATHESIS_HOOKS": "tests.fuzz.resident",
                "CARDSVC_FUZZ_BASE_URL": base_url,
                "CARDSVC_FUZZ_CARD_NO": seeded.card_no,
                "CARDSVC_FUZZ_RESIDENT_PASSWORD": RESIDENT_PASSWORD,
                "CARDSVC_FUZZ_COUNTER_USER": Role.counter_operator.value,
                "CARDSVC_FUZZ_COUNTER_PASSWORD": PASSWORD,
            },
            operations=admitted(spec, "resident"),
        )
    )
    for role in ROLES:
        answer = httpx.post(
            f"{base_url}/api/v1/staff/login",
            json={"username": role.value, "password": PASSWORD},
            timeout=30,
        )
        answer.raise_for_status()
        token = answer.json()["access_token"]
        found.append(
            Caller(
                role.value,
                headers={"Authorization": f"Bearer {token}"},
                operations=admitted(spec, "staff", role),
            )
        )
    return found


def fuzz(
    base_url: str, caller: Caller, examples: int, seed: int, report: Path, log_dir: Path | None
) -> Outcome:
    command = [
        sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG),
        "run", f"{base_url}/openapi.json",
        "--checks", "not_a_server_error",
        "--max-examples", str(examples),
        "--seed", str(seed),
        "--workers", "1",
        "--phases", "examples,coverage,fuzzing",
        "--suppress-health-check", "all",
        "--request-timeout", "30",
        "--no-color",
        "--report", "junit",
        "--report-junit-path", str(report),
    ]  # fmt: skip
    if log_dir is not None:  # and every request with its answer, to see what was refused
        har = log_dir / f"{report.stem}.har"
        command[command.index("junit")] = "junit,har"
        command += ["--report-har-path", str(har)]
    for name, value in caller.headers.items():
        command += ["--header", f"{name}: {value}"]
    for operation_id in caller.operations:
        command += ["--include-operation-id", operation_id]
    started = time.monotonic()
    # In the run's own directory (schemathesis keeps what it found there), with this checkout on
    # the path for the hooks.
    root = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        command,
        cwd=report.parent,
        env={**os.environ, **caller.env, "PYTHONPATH": root},
        capture_output=True,
        text=True,
        check=False,
    )
    output = (done.stdout + done.stderr).strip()
    if log_dir is not None:
        (log_dir / f"{report.stem}.log").write_text(f"{caller.name}\n{output}\n", encoding="utf-8")
    lines = output.splitlines()
    if done.returncode:
        summary = "\n".join(lines[-60:])
    else:  # how much was tried
        summary = "\n".join(line for line in lines if "generated" in line or "Tested:" in line)
    return Outcome(caller.name, done.returncode, time.monotonic() - started, summary)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10, help="per operation and caller")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--database-url", default=None, help="PostgreSQL (default: SQLite)")
    parser.add_argument(
        "--caller",
        action="append",
        default=[],
        help="run only the callers whose name contains this (repeatable; default: every caller)",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        default=None,
        help="keep each caller's full schemathesis output here",
    )
    args = parser.parse_args()
    if args.log_dir is not None:
        args.log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cardsvc-fuzz-") as tmp:
        var_dir = Path(tmp) / "var"
        env = server_env(var_dir, args.database_url)
        outcomes: list[Outcome] = []
        with serving(env, ready="/readyz") as base_url:
            settings = Settings(
                mode=Mode.development,
                var_dir=var_dir,
                database_url=env.get("CARDSVC_DATABASE_URL", ""),
                hsm_url="spawn",
            )
            seeded = asyncio.run(seed(settings))
            chosen = [
                c
                for c in callers(base_url, seeded)
                if not args.caller or any(part in c.name for part in args.caller)
            ]
            for n, caller in enumerate(chosen):
                report = Path(tmp) / f"{n}.xml"
                outcome = fuzz(base_url, caller, args.examples, args.seed, report, args.log_dir)
                outcomes.append(outcome)
                status = "ok" if outcome.code == 0 else f"FAILED (exit {outcome.code})"
                print(f"== {outcome.caller}: {status} in {outcome.seconds:.0f} s", flush=True)
                print(outcome.summary, flush=True)
    failed = [o.caller for o in outcomes if o.code != 0]
    print(
        f"schemathesis: {len(outcomes) - len(failed)} of {len(outcomes)} callers found no 5xx "
        "and no operation refusing what its schema admits"
    )
    if failed:
        print(f"5xx, a schema validation mismatch (or a failed run) for: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
