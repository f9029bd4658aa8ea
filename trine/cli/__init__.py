"""The ``trine`` command line: one module per command, shared helpers in ``common``."""
