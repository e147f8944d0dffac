"""Leads: acquisition and sales (leads, ICP fit, qualification, deals and estimates, spend)."""
