from tests.conftest_pcsc import connect, pcscd, reconnect

__all__ = ["connect", "pcscd", "reconnect"]
