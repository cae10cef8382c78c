"""Segment store, catalogue and FAISS lookup behind :class:`acr.index.store.Index`."""
