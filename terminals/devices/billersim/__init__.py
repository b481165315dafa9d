"""A simulated biller (test and demo equipment): the biller's side of docs/biller-protocol.md as
its own process, with injectable failures. It shares nothing with the channel's adapter but the
document: it signs with its own copy of the key the HSM holds."""
