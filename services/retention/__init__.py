"""Retention: client health, tiers, cancellations and save offers, referrals, loyalty, economics."""
