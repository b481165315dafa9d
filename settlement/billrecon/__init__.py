"""The daily reconciliation file of each biller (docs/biller-protocol.md §8, docs/bills.md §11)."""
