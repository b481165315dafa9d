"""Bills at kiosks: a kiosk terminal asks what is due and pays it from the card holder's online
account with the card and its PIN (docs/bills.md §5, docs/terminal-protocol.md §3)."""
