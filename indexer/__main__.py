"""``python -m indexer ...``: the same as ``acr index ...``."""

from __future__ import annotations

import sys

from acr.cli import run_command


def main() -> int:
    """Run ``acr index`` with this process's arguments.

    Returns
    -------
    int
        The exit status (0 when every file was indexed or skipped, 1 when some failed).
    """
    return run_command("index", sys.argv[1:], prog="python -m indexer")


if __name__ == "__main__":
    raise SystemExit(main())
