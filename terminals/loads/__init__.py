"""Purse loads (圈存) through the host: MAC1 verified and MAC2 produced by the HSM, confirmed by
the card's TAC, unconfirmed loads resolved by card evidence (DESIGN §9, reference/pboc.md §4)."""
