"""The card reader adapter: a small :class:`CardLink` protocol over PC/SC (pyscard, only in
``cardsvc.reader.pcsc``) or straight to an in-process virtual card.

Import ``cardsvc.reader.pcsc`` lazily: it needs the PC/SC library at import time.
"""

from cardsvc.reader.errors import CardError, CardRemoved, NoCard, ReaderUnavailable, error_for_sw
from cardsvc.reader.link import CardLink, InProcessLink, command, transmit_t0

__all__ = [
    "CardError",
    "CardLink",
    "CardRemoved",
    "InProcessLink",
    "NoCard",
    "ReaderUnavailable",
    "command",
    "error_for_sw",
    "transmit_t0",
]
