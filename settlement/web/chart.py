"""The geometry of the days page's chart: what each day cleared per transaction class, as stacked
bars in a server-rendered SVG (no script, no library). Positive amounts stack up from zero,
refunds (negative) down from it. Amounts stay integer fen; only pixel positions are floats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from settlement.days.service import Volume

WIDTH: Final = 900
HEIGHT: Final = 320
LEFT: Final = 100  # room for the amounts of the axis
RIGHT: Final = 10
TOP: Final = 12
BOTTOM: Final = 40  # room for the dates
# Okabe-Ito: told apart by people with the common colour blindnesses, and in grey on paper.
PALETTE: Final = (
    "#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
)  # fmt: skip
TICKS: Final = 5


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    tx_class: str
    clearing_date: date
    count: int
    gross: int


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    fen: int


@dataclass(frozen=True, slots=True)
class DayTick:
    position: float
    text: str


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    left: int
    right: float
    top: int
    bottom: float
    zero: float
    bars: list[Bar]
    ticks: list[Tick]
    days: list[DayTick]
    legend: list[tuple[str, str]]
    first: date
    last: date


def nice_step(span: int, ticks: int = TICKS) -> int:
    """The smallest 1, 2 or 5 × 10^k fen with at most ``ticks`` steps over ``span`` fen."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor * ticks >= span:
                return step * factor
        step *= 10


def color_of(classes: list[str], tx_class: str) -> str:
    return PALETTE[classes.index(tx_class) % len(PALETTE)]


def build(volume: Volume) -> Chart:
    slots = (volume.last - volume.first).days + 1
    up: dict[date, int] = {}
    down: dict[date, int] = {}
    for p in volume.points:
        if p.gross >= 0:
            up[p.clearing_date] = up.get(p.clearing_date, 0) + p.gross
        else:
            down[p.clearing_date] = down.get(p.clearing_date, 0) + p.gross
    high = max(up.values(), default=0)
    low = min(down.values(), default=0)
    step = nice_step(max(high - low, 100))
    top_fen = -(-high // step) * step
    bottom_fen = (low // step) * step
    if top_fen == bottom_fen:
        top_fen += step
    plot_h = HEIGHT - TOP - BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    scale = plot_h / (top_fen - bottom_fen)

    def y_of(fen: int) -> float:
        return round(TOP + (top_fen - fen) * scale, 1)

    slot = plot_w / slots
    bar_w = round(slot * 0.7, 1)
    bars = []
    stacked_up: dict[date, int] = {}
    stacked_down: dict[date, int] = {}
    for p in sorted(
        volume.points, key=lambda p: (p.clearing_date, volume.classes.index(p.tx_class))
    ):
        x = round(LEFT + (p.clearing_date - volume.first).days * slot + (slot - bar_w) / 2, 1)
        if p.gross >= 0:
            base = stacked_up.get(p.clearing_date, 0)
            stacked_up[p.clearing_date] = base + p.gross
            y0, y1 = y_of(base + p.gross), y_of(base)
        else:
            base = stacked_down.get(p.clearing_date, 0)
            stacked_down[p.clearing_date] = base + p.gross
            y0, y1 = y_of(base), y_of(base + p.gross)
        bars.append(
            Bar(
                x, y0, bar_w, round(max(y1 - y0, 0.5), 1), color_of(volume.classes, p.tx_class),
                p.tx_class, p.clearing_date, p.count, p.gross,
            )
        )  # fmt: skip
    ticks = [Tick(y_of(v), v) for v in range(bottom_fen, top_fen + 1, step)]
    days = []
    for n in range(slots):
        if n % 5 == 0 or n == slots - 1:
            day = volume.first + timedelta(days=n)
            days.append(DayTick(round(LEFT + n * slot + slot / 2, 1), day.strftime("%m-%d")))
    return Chart(
        WIDTH, HEIGHT, LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM, y_of(0), bars, ticks, days,
        [(c, color_of(volume.classes, c)) for c in volume.classes], volume.first, volume.last,
    )  # fmt: skip
