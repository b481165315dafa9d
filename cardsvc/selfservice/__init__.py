"""Resident self-service: the online channel's activation codes, passwords, tokens and the
resident's own routes (docs/self-service.md)."""
