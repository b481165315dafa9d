"""Moved: the terminal tests' helpers are in :mod:`tests.terminals.helpers`, the sites and cards
in :mod:`tests.factories`; importable here while branches written before the move land."""

from tests.factories import ACTOR, BANK, PIN, Site, make_card, make_site, pin_block_for, set_pin
from tests.terminals.helpers import available, balance, free_port, signed_in, with_pin

__all__ = [
    "ACTOR", "BANK", "PIN", "Site", "available", "balance", "free_port", "make_card",
    "make_site", "pin_block_for", "set_pin", "signed_in", "with_pin",
]  # fmt: skip
