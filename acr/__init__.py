"""Automatic content recognition: fingerprints on FAISS, matched to content and offset."""

from acr.index.catalogue import ContentRecord, ContentSpec
from acr.index.store import Index, IndexStats
from acr.results import Match, MatchResult

__all__ = ["ContentRecord", "ContentSpec", "Index", "IndexStats", "Match", "MatchResult"]
__version__ = "0.1.0"
