"""The content library: reference media, their metadata, and getting them into the index.

* :mod:`acr.library.uploads` stores uploaded media, content-addressed by SHA-256;
* :mod:`acr.library.imports` registers media already on the server, by path or manifest;
* :mod:`acr.library.contents` reads and changes library rows (with their events);
* :mod:`acr.library.indexing` is the background worker that indexes them.
"""

from acr.library.indexing import ContentIndexer, sync_from_index

__all__ = ["ContentIndexer", "sync_from_index"]
