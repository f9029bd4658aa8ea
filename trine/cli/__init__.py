"""The ``trine`` command line: one module per command, shared helpers in ``common``.

:mod:`trine.cli.main` builds the parser from the command modules and turns a
:class:`trine.TrineError` into one line and exit status 2; ``python -m trine.cli`` runs it.
"""
