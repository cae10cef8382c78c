"""``python -m acr``: the ``acr`` command."""

from acr.cli import main

raise SystemExit(main())
