"""The ``clientflow`` command line."""
