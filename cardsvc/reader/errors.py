"""Card errors: status words and reader failures as typed domain errors (reference/pboc.md §8)."""

from __future__ import annotations

from typing import ClassVar, Final

from cardsvc.errors import DependencyUnavailable, DomainError


class CardError(DomainError):
    """The card or the reader ended a command; ``sw`` is the status word when there is one."""

    status_code: ClassVar[int] = 409

    def __init__(self, detail: str, sw: int | None = None) -> None:
        super().__init__(detail, sw=f"{sw:04X}" if sw is not None else None)
        self.sw = sw


class ReaderUnavailable(CardError, DependencyUnavailable):
    """No PC/SC service, no such reader, or the reader failed."""

    status_code: ClassVar[int] = 503


class ReaderBusy(CardError):
    """Another program holds the card exclusively."""


class NoCard(CardError):
    """No card was presented in time."""


class CardRemoved(CardError):
    """The card left the reader (or lost power) during the exchange: the outcome is unknown."""


class CardStatusError(CardError):
    """A status word with no more specific class."""


class InsufficientBalance(CardStatusError):
    pass


class MacInvalid(CardStatusError):
    pass


class SecureMessagingMacInvalid(CardStatusError):
    pass


class ApplicationBlocked(CardStatusError):
    """Temporarily (6A81 on SELECT) or permanently (9303) blocked purse."""


class CounterExhausted(CardStatusError):
    pass


class KeyNotSupported(CardStatusError):
    pass


class ProofUnavailable(CardStatusError):
    pass


class WrongState(CardStatusError):
    pass


class ConditionsNotSatisfied(CardStatusError):
    pass


class SecurityNotSatisfied(CardStatusError):
    pass


class PinWrong(CardStatusError):
    def __init__(self, detail: str, sw: int | None = None) -> None:
        super().__init__(detail, sw)
        self.tries_left = (sw or 0) & 0x0F


class PinBlocked(CardStatusError):
    pass


class FileNotFound(CardStatusError):
    pass


class RecordNotFound(CardStatusError):
    pass


class CapRecordLocked(CardStatusError):
    pass


class CommandRejected(CardStatusError):
    """Wrong length, parameters, instruction or class: a bug on our side of the exchange."""


SW_ERRORS: Final[dict[int, tuple[type[CardStatusError], str]]] = {
    0x9401: (InsufficientBalance, "balance insufficient"),
    0x9302: (MacInvalid, "MAC invalid"),
    0x9303: (ApplicationBlocked, "application permanently blocked"),
    0x6A81: (ApplicationBlocked, "application blocked or function not supported"),
    0x9402: (CounterExhausted, "transaction counter at maximum"),
    0x9403: (KeyNotSupported, "key index not supported"),
    0x9406: (ProofUnavailable, "MAC/TAC unavailable for this counter"),
    0x9407: (CapRecordLocked, "compound record locked"),
    0x6901: (WrongState, "command not allowed in the current transaction state"),
    0x6985: (ConditionsNotSatisfied, "conditions of use not satisfied"),
    0x6982: (SecurityNotSatisfied, "security status not satisfied"),
    0x6300: (SecurityNotSatisfied, "authentication failed"),
    0x6988: (SecureMessagingMacInvalid, "secure-messaging MAC wrong"),
    0x6983: (PinBlocked, "PIN blocked"),
    0x6A82: (FileNotFound, "file or application not found"),
    0x6A83: (RecordNotFound, "record not found"),
    0x6700: (CommandRejected, "wrong length"),
    0x6A80: (CommandRejected, "wrong data"),
    0x6A86: (CommandRejected, "wrong P1/P2"),
    0x6981: (CommandRejected, "command incompatible with file structure"),
    0x6D00: (CommandRejected, "instruction not supported"),
    0x6E00: (CommandRejected, "class not supported"),
}


def error_for_sw(sw: int, what: str = "") -> CardStatusError:
    """The typed error for a status word other than 9000."""
    prefix = f"{what}: " if what else ""
    if sw & 0xFFF0 == 0x63C0:
        return PinWrong(f"{prefix}PIN wrong, {sw & 0x0F} tries left", sw)
    cls, text = SW_ERRORS.get(sw, (CardStatusError, "card refused the command"))
    return cls(f"{prefix}{text} (SW {sw:04X})", sw)
