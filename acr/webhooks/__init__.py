"""Webhooks: events signed and delivered to the endpoints that subscribe to them.

* :mod:`~acr.webhooks.catalogue`: the event types there are, and an event's wire shape.
* :mod:`~acr.webhooks.signing`: ``Acr-Signature: t=…,v1=…`` (Stripe's scheme) and
  :func:`~acr.webhooks.signing.verify` for receivers.
* :mod:`~acr.webhooks.endpoints`: creating and changing endpoints.
* :mod:`~acr.webhooks.delivery`: the persistent queue and the worker that sends it.
"""

from acr.webhooks.signing import SIGNATURE_HEADER, SignatureVerificationError, sign, verify

__all__ = ["SIGNATURE_HEADER", "SignatureVerificationError", "sign", "verify"]
