"""Billing: invoices, deposits, payments, subscriptions (port 8003, topic `payments`)."""
