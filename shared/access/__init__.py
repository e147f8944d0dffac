"""Access: people and roles, personal and OpenID Connect tokens, the audit trail.

The leads service owns the registry of people and tokens and announces every change on the
``people`` topic (whole states, keyed by person or token); every service folds that topic into
its own ``access_people`` and ``access_tokens`` tables and checks tokens there. No service asks
another whether a token is valid. See docs/access.md.
"""
