"""Payout rails: how money leaves for a bank account or a card."""
