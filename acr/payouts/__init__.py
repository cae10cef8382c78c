"""Revenue to content owners' connected accounts, and payouts to their banks and cards.

Modelled on Stripe Connect; our :mod:`~acr.payouts.ledger` is the source of truth.
"""
