"""Clientflow's contract (events, topics) and plumbing (broker, outbox, inbox, settings).

Nothing in this package holds a business rule: those live in each service's ``domain.py``.
"""
