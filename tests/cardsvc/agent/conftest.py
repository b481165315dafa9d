from tests.conftest_pcsc import pcscd

__all__ = ["pcscd"]
