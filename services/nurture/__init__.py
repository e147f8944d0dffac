"""Nurture: sequences, enrollments, messages, consent, feedback and human takeovers."""
