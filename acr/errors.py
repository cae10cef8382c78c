"""Typed errors raised by the ACR core.

Every error carries a stable machine-readable ``code`` so that the CLI and the
HTTP API can report it without parsing messages (the API maps them onto RFC 9457
problem documents).
"""

from __future__ import annotations


class AcrError(Exception):
    """Base class of every error the core raises on purpose."""

    code = "acr_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MediaError(AcrError):
    """The media could not be turned into usable audio."""

    code = "media_error"


class EmptyMediaError(MediaError):
    """The file or upload holds no bytes at all."""

    code = "empty_media"


class CorruptMediaError(MediaError):
    """The container or stream is truncated or damaged beyond decoding."""

    code = "corrupt_media"


class UnsupportedFormatError(MediaError):
    """No demuxer recognises the bytes as a media container."""

    code = "unsupported_format"


class NoAudioStreamError(MediaError):
    """The container decodes but has no audio stream."""

    code = "no_audio_stream"


class NoVideoStreamError(MediaError):
    """The container decodes but has no video stream (an audio-only file)."""

    code = "no_video_stream"


class SilentMediaError(MediaError):
    """The audio is digital silence or too quiet to fingerprint."""

    code = "silent_media"


class MediaTooLongError(MediaError):
    """The sample is longer than the configured maximum duration."""

    code = "media_too_long"


class MediaTooLargeError(MediaError):
    """The file is larger than the configured byte limit."""

    code = "media_too_large"


class MediaTooShortError(MediaError):
    """The sample is too short to carry any fingerprint."""

    code = "media_too_short"


class IndexStoreError(AcrError):
    """The index directory is unusable (missing, locked, incompatible)."""

    code = "index_error"


class ShardsUnavailableError(IndexStoreError):
    """Some shards of a sharded index answered no replica's request in time."""

    code = "shards_unavailable"


class UnknownContentError(AcrError):
    """A content id that the index does not hold."""

    code = "unknown_content"


class FingerprintFormatError(AcrError):
    """Serialized fingerprints sent by a client cannot be parsed."""

    code = "invalid_fingerprints"
