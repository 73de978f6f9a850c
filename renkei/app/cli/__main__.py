"""``python -m renkei.app.cli ARGS``: the ``renkei`` command."""

import sys

from renkei.app.cli import app

sys.exit(app())
