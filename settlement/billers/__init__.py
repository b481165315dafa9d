"""Billers in the nightly settlement (docs/bills.md §3): each biller's day, its fees, its
batch and its payouts on its cycle."""
