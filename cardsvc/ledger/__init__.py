"""Double-entry ledger for stored value (DESIGN §10): accounts, balanced transactions, holds."""
