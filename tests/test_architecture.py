"""The layering laws of docs/architecture.md, checked on the import graph of the source tree.

Every import counts: at module level, inside a function, or under ``TYPE_CHECKING``. A failure
names the importing module and the line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache

import grimp
import pytest

PACKAGES = ("cardsvc", "terminals", "settlement", "hsm_sim", "tests", "bench")
PRODUCTION = ("cardsvc", "terminals", "settlement", "hsm_sim")

# Composition roots: the only modules that assemble the packages (docs/architecture.md).
ROOTS = ("cardsvc.app", "cardsvc.cli", "cardsvc.__main__", "cardsvc.jobs.table", "cardsvc.demo")
# What a package brings to the roots: its routers, command groups and jobs.
DECLARATIONS = ("cardsvc.components", "terminals.components", "settlement.components")
# Test and demo equipment: simulated cards, PSAMs and terminals.
DEVICES = "terminals.devices"
# The adapters of the HSM port, the only service modules that reach the simulator.
HSM_ADAPTERS = ("cardsvc.hsm.sim", "cardsvc.hsm.development")
WEB = ("fastapi", "starlette")
# Modules that hold the domain logic and its storage; none of them may reach the web layer.
NON_WEB_KINDS = ("service", "tasks", "repository", "models", "context")


@cache
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True)


def within(module: str, prefixes: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules_of(*packages: str) -> list[str]:
    return sorted(m for m in graph().modules if within(m, packages))


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import the module makes."""
    g = graph()
    for imported in sorted(g.find_modules_directly_imported_by(module)):
        for detail in g.get_import_details(importer=module, imported=imported):
            yield imported, int(detail["line_number"])


def violations(importers: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    targets = tuple(forbidden)
    return [
        f"{importer}:{line} imports {imported}"
        for importer in importers
        for imported, line in imports_of(importer)
        if within(imported, targets)
    ]


def domain_of(module: str) -> str:
    """``cardsvc.cards.service`` -> ``cardsvc.cards``."""
    return ".".join(module.split(".")[:2])


def test_hsm_sim_imports_nothing_of_ours() -> None:
    assert violations(modules_of("hsm_sim"), ("cardsvc", "terminals", "settlement")) == []


def test_cardsvc_imports_terminals_and_settlement_only_in_its_roots() -> None:
    importers = [m for m in modules_of("cardsvc") if not within(m, ROOTS)]
    assert violations(importers, ("terminals", "settlement")) == []


def test_terminals_never_import_settlement() -> None:
    assert violations(modules_of("terminals"), ("settlement",)) == []


def test_roots_and_declarations_are_imported_only_by_roots() -> None:
    """So the rule above holds for indirect imports too: no chain leads through a root."""
    importers = [m for m in modules_of(*PRODUCTION) if not within(m, ROOTS)]
    found = violations(importers, ROOTS + DECLARATIONS)
    assert found == []


def test_domains_never_import_the_simulated_devices() -> None:
    allowed = (*ROOTS, DEVICES, "terminals.components")
    importers = [m for m in modules_of(*PRODUCTION) if not within(m, allowed)]
    assert violations(importers, (DEVICES,)) == []


def test_a_repository_is_used_only_by_its_own_domain() -> None:
    found = []
    for importer in modules_of(*PRODUCTION):
        if within(importer, ROOTS):
            continue
        for imported, line in imports_of(importer):
            if (
                imported.endswith(".repository")
                and within(imported, PRODUCTION)
                and domain_of(imported) != domain_of(importer)
            ):
                found.append(f"{importer}:{line} imports {imported}")
    assert found == []


@pytest.mark.parametrize("kind", NON_WEB_KINDS)
def test_domain_logic_never_reaches_the_web_layer(kind: str) -> None:
    g = graph()
    chains = []
    for module in modules_of(*PRODUCTION):
        if module.rsplit(".", 1)[-1] != kind:
            continue
        for web in WEB:
            chain = g.find_shortest_chain(importer=module, imported=web)
            if chain:
                chains.append(" -> ".join(chain))
    assert chains == []


# The counter agent runs on counter PCs, which hold no database or HSM credential: nothing it
# loads, directly or through a chain of imports, opens a database or reaches the HSM.
AGENT = "cardsvc.agent"
AGENT_NEVER = (
    "cardsvc.db", "cardsvc.settings", "cardsvc.hsm", "cardsvc.resources", "hsm_sim",
    "sqlalchemy", "asyncpg", "aiosqlite", "redis", "fastapi", "starlette",
)  # fmt: skip


def test_the_counter_agent_reaches_neither_database_nor_hsm() -> None:
    g = graph()
    found = [
        f"{module} leads to {reached}"
        for module in modules_of(AGENT)
        for reached in sorted(g.find_upstream_modules(module))
        if within(reached, AGENT_NEVER)
    ]
    assert not found, found


def test_production_code_never_imports_tests_or_benchmarks() -> None:
    assert violations(modules_of(*PRODUCTION), ("tests", "bench")) == []


def test_the_simulator_is_reached_only_through_the_hsm_adapters() -> None:
    """Services depend on the port (``cardsvc.hsm``); the simulated card and PSAM (devices) share
    the simulator's card cryptography."""
    allowed = (*HSM_ADAPTERS, DEVICES, "hsm_sim")
    importers = [m for m in modules_of(*PRODUCTION) if not within(m, allowed)]
    assert violations(importers, ("hsm_sim",)) == []


@pytest.mark.parametrize(
    ("library", "adapters"),
    [
        ("smartcard", ("cardsvc.reader.pcsc",)),  # pyscard: the PC/SC reader
        ("Crypto", ("hsm_sim", DEVICES)),  # the cipher library: keys live only there
    ],
)
def test_each_outside_library_has_its_adapter(library: str, adapters: tuple[str, ...]) -> None:
    importers = [m for m in modules_of(*PRODUCTION) if not within(m, adapters)]
    assert violations(importers, (library,)) == []


def test_no_orm_object_is_saved_as_an_untracked_record() -> None:
    """docs/architecture.md §10: lifecycle entities are loaded and changed in place, hot records
    go through Core; ``session.merge`` (an untracked object written back by a full-row rewrite)
    is neither."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    found = []
    for package in PRODUCTION:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("merge", "make_transient", "expunge")
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "session"
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []


def test_the_demo_moves_money_only_as_counters_and_terminals_do() -> None:
    """docs/architecture.md §9: a demo scenario funds accounts and purses through the operations
    counters, banks and terminals use (deposits, loads, payments), never by a posting of its own,
    so what it shows is what the system does."""
    import ast
    from pathlib import Path

    writers = {"post", "place_hold", "post_hold", "void_hold", "reverse"}
    root = Path(__file__).resolve().parent.parent
    found = []
    for path in sorted((root / "cardsvc" / "demo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            named = isinstance(node, ast.Name) and node.id == "PostingRequest"
            called = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in writers
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "ledger"
            )
            if named or called:
                found.append(f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}")
    assert found == []
