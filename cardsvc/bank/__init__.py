"""Bank top-ups of online accounts: signed credit notifications and credit files, matched by
account reference; what matches no account waits in suspense as a break."""
