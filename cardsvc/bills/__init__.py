"""Utility bills: billers, query and payment through the biller protocol, reconciliation."""
