"""The counter agent: the program on a counter PC (``cardsvc-agent``). It knows the API's base URL
(and a CA file for TLS) and the clerk's login, reaches the card through pcscd, and relays the
APDUs the server chooses (docs/counter-agent.md). It imports nothing that opens a database or
reaches the HSM (``tests/test_architecture.py``)."""
