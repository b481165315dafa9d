"""Schemathesis against a running API (``python -m tests.fuzz.api``); not collected by pytest."""
