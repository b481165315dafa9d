"""The payees' daily batches, merchants' and billers' alike: the due ones with what their carried
batches bring, settling and carrying them, the day's totals (docs/settlement.md, docs/bills.md
§8)."""
