"""Online authorization: purchases, pre-authorizations with holds, completions, reversals and
refunds paid from the resident's online account (DESIGN §9)."""
