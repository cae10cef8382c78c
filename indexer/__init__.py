"""Batch indexer: a thin shell over :mod:`acr` that indexes whole catalogues.

Give it media files, directories and CSV/JSON Lines manifests; it hashes and
fingerprints them in worker processes and commits them to an index in atomic
batches. Runs are idempotent and resumable (files already indexed are skipped
by content hash), and a bad file is reported, never fatal.

>>> from indexer import run_batch
>>> summary = run_batch("my-index", ["music/", "catalogue.csv"])  # doctest: +SKIP
>>> summary.indexed, summary.failed  # doctest: +SKIP
(412, [])

The same from the shell: ``acr index --index-dir my-index music/ catalogue.csv``
or ``python -m indexer --index-dir my-index music/ catalogue.csv``.
"""

from indexer.job import (
    MEDIA_EXTENSIONS,
    BatchInterrupted,
    BatchSummary,
    Failure,
    describe_error,
    iter_inputs,
    run_batch,
)
from indexer.manifest import ManifestEntry, ManifestError, read_manifest

__all__ = [
    "MEDIA_EXTENSIONS",
    "BatchInterrupted",
    "BatchSummary",
    "Failure",
    "ManifestEntry",
    "ManifestError",
    "describe_error",
    "iter_inputs",
    "read_manifest",
    "run_batch",
]
