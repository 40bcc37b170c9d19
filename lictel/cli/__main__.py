"""``python -m lictel.cli``: the ``lictel`` command."""

from lictel.cli import main

main()
