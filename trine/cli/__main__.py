"""``python -m trine.cli``: the ``trine`` command."""

import sys

from trine.cli.main import main

sys.exit(main())
