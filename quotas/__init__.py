"""Team and member quotas: limits, reservations, charges, refunds and their ledger.

`services` writes (reserve, charge, refund), `selectors` reads (use, summaries, the
monitoring overview), `periods` says where days and months start. quotas depends on
accounts (teams, users) and on nothing above it: the generator calls in, never the
other way round.
"""
