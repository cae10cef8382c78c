"""Signatures of webhook deliveries, as Stripe makes them, and their check for receivers.

A delivery carries ``Acr-Signature: t=<unix time>,v1=<hex>``, where ``v1`` is
HMAC-SHA256, keyed with the endpoint's whole secret (``whsec_…``), of
``"<t>.<body>"``. It is the value Stripe sends as ``Stripe-Signature``, so a
receiver may check it with ``stripe.Webhook.construct_event(body, header,
secret)`` as well as with :func:`verify`. While a rolled secret is still valid
the header holds one ``v1`` per secret; a receiver accepts any that matches.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

SIGNATURE_HEADER = "Acr-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300
"""Oldest signature accepted, in seconds: a captured delivery cannot be replayed later."""


class SignatureVerificationError(ValueError):
    """The signature is missing, malformed, wrong, or too old."""


def _signature(payload: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(payload: bytes, secret: str | Sequence[str], timestamp: int | None = None) -> str:
    """The signature header value of ``payload``: ``t=…,v1=…`` (one ``v1`` per secret).

    Parameters
    ----------
    payload : bytes
        The exact body sent.
    secret : str or sequence of str
        The endpoint's secret; several while a rolled secret is still valid.
    timestamp : int, optional
        Unix time of signing; now if not given.
    """
    secrets_ = [secret] if isinstance(secret, str) else list(secret)
    if not secrets_:
        raise ValueError("sign with at least one secret")
    t = int(time.time()) if timestamp is None else timestamp
    parts = [f"t={t}", *(f"{SCHEME}={_signature(payload, s, t)}" for s in secrets_)]
    return ",".join(parts)


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureVerificationError("the timestamp is not an integer") from None
        elif key == SCHEME:
            signatures.append(value)
    if timestamp is None:
        raise SignatureVerificationError("no timestamp (t=) in the signature header")
    if not signatures:
        raise SignatureVerificationError(f"no {SCHEME} signature in the signature header")
    return timestamp, signatures


def verify(
    payload: bytes | str,
    header: str | None,
    secret: str,
    tolerance_s: int | None = DEFAULT_TOLERANCE_S,
    *,
    now: float | None = None,
) -> int:
    """Check a delivery's signature header; return its timestamp.

    Parameters
    ----------
    payload : bytes or str
        The body exactly as received (not re-serialised JSON).
    header : str or None
        The ``Acr-Signature`` header value.
    secret : str
        The endpoint's secret (``whsec_…``).
    tolerance_s : int or None
        Refuse signatures older than this many seconds; None or 0 accepts any age.
    now : float, optional
        The current Unix time (for tests).

    Raises
    ------
    SignatureVerificationError
        No header, a malformed one, no matching signature, or one too old.
    """
    if not header:
        raise SignatureVerificationError(f"no {SIGNATURE_HEADER} header")
    body = payload.encode() if isinstance(payload, str) else payload
    timestamp, signatures = _parse(header)
    expected = _signature(body, secret, timestamp)
    # Every candidate is compared, in constant time, so timing tells nothing about which.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    if not matched:
        raise SignatureVerificationError("no signature matches the payload and secret")
    current = time.time() if now is None else now
    if tolerance_s and timestamp < current - tolerance_s:
        raise SignatureVerificationError(f"the signature is older than {tolerance_s} s")
    return timestamp


def construct_event(
    payload: bytes | str,
    header: str | None,
    secret: str,
    tolerance_s: int | None = DEFAULT_TOLERANCE_S,
) -> dict[str, Any]:
    """Verify a delivery and return its event (what a receiver's handler starts with)."""
    verify(payload, header, secret, tolerance_s)
    event: dict[str, Any] = json.loads(payload)
    return event
