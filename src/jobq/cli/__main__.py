"""``python -m jobq.cli``: the ``jobq`` command."""

from . import main

main()
