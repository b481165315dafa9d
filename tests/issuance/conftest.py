"""Issuance fixtures: the PC/SC reader (staff of each role are the root conftest's)."""

from __future__ import annotations

from tests.conftest_pcsc import pcscd

__all__ = ["pcscd"]
