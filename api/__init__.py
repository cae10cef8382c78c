"""HTTP API (FastAPI): a thin shell over :mod:`acr`.

Empty until the service lands (issue #4); the fingerprinting core, the batch
indexer and the ``acr`` command are usable on their own.
"""
