"""The resident's online account: reference, PIN, cash at counters, balance and statement."""
