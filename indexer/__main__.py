"""``python -m indexer ...``: the same as ``acr index ...``, plus ``--ray-address``."""

from __future__ import annotations

import argparse
import os
import sys

from acr.cli import run_command


def main() -> int:
    """Run ``acr index`` with this process's arguments.

    ``--ray-address ADDRESS`` (or ``ACR_RAY_ADDRESS``) hashes and fingerprints
    on a Ray cluster instead of a local process pool (``local`` starts Ray in
    this process); see :mod:`indexer.ray_backend`.

    Returns
    -------
    int
        The exit status (0 when every file was indexed or skipped, 1 when some failed).
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--ray-address")
    known, rest = parser.parse_known_args(sys.argv[1:])
    if known.ray_address:
        os.environ["ACR_RAY_ADDRESS"] = known.ray_address
    return run_command("index", rest, prog="python -m indexer")


if __name__ == "__main__":
    raise SystemExit(main())
