"""``python -m stroke_dagster.cli``: the same as the ``stroke`` command."""

import sys

from stroke_dagster.cli import main

sys.exit(main())
