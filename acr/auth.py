"""API keys: created once, shown once, stored as a SHA-256 of the secret.

A key reads ``acr_<prefix>_<secret>``. The prefix finds the row; the secret is
compared by hash in constant time. Keys are 190-bit random strings, so a fast
hash is enough: there is no password to brute-force.

A server process remembers the keys it authenticated for a few seconds
(:class:`KeyCache`), so that a viewer app's stream of matches does not look its
key up in the database for every one. A revocation made in the process is
honoured at once; one made elsewhere (another worker, ``acr keys revoke``)
within :data:`KEY_CACHE_TTL_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from acr.db.models import ApiKey, App, Organisation, utcnow
from acr.roles import Role

__all__ = [
    "AuthError",
    "CreatedKey",
    "KeyCache",
    "KeyScopeError",
    "Principal",
    "Role",
    "authenticate",
    "create_key",
    "ensure_app",
    "ensure_organisation",
    "revoke_key",
]

KEY_PATTERN = re.compile(r"^acr_([A-Za-z0-9]{12})_([A-Za-z0-9]{32})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


class AuthError(Exception):
    """The credential is missing, malformed, unknown or revoked."""


class KeyScopeError(ValueError):
    """A key was asked for with a role and a scope that do not go together."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a key, its role and the one organisation or app it is scoped to."""

    key_id: str
    role: Role
    organisation_id: str | None = None
    app_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class CreatedKey:
    """A new key; ``secret`` is the only time the full key is available."""

    key_id: str
    secret: str
    principal: Principal


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def ensure_organisation(session: Session, slug: str, name: str | None = None) -> Organisation:
    """The organisation with ``slug``, created if it does not exist."""
    if not SLUG_PATTERN.match(slug):
        raise KeyScopeError(f"invalid organisation slug {slug!r}: use a-z, 0-9 and '-'")
    found = session.scalars(select(Organisation).where(Organisation.slug == slug)).first()
    if found is None:
        found = Organisation(slug=slug, name=name or slug)
        session.add(found)
        session.flush()
    return found


def ensure_app(session: Session, slug: str, name: str | None = None) -> App:
    """The viewer app with ``slug``, created if it does not exist."""
    if not SLUG_PATTERN.match(slug):
        raise KeyScopeError(f"invalid app slug {slug!r}: use a-z, 0-9 and '-'")
    found = session.scalars(select(App).where(App.slug == slug)).first()
    if found is None:
        found = App(slug=slug, name=name or slug)
        session.add(found)
        session.flush()
    return found


def create_key(
    session: Session,
    role: Role,
    *,
    organisation: str | None = None,
    app: str | None = None,
    name: str = "",
) -> CreatedKey:
    """Create a key (and its organisation or app, by slug, if new); the caller commits.

    Raises
    ------
    KeyScopeError
        A campaign manager without an organisation, a viewer app without an app,
        or a scope given to a role that takes none.
    """
    organisation_id = app_id = None
    if role is Role.CAMPAIGN_MANAGER:
        if not organisation or app:
            raise KeyScopeError("a campaign_manager key is scoped to one organisation, no app")
        organisation_id = ensure_organisation(session, organisation).id
    elif role is Role.VIEWER_APP:
        if not app or organisation:
            raise KeyScopeError("a viewer_app key is scoped to one app, no organisation")
        app_id = ensure_app(session, app).id
    elif organisation or app:
        raise KeyScopeError("an admin key is not scoped to an organisation or an app")
    prefix, secret = _random(12), _random(32)
    row = ApiKey(
        name=name,
        role=role.value,
        prefix=prefix,
        secret_hash=_digest(secret),
        organisation_id=organisation_id,
        app_id=app_id,
    )
    session.add(row)
    session.flush()
    principal = Principal(row.id, role, organisation_id, app_id)
    return CreatedKey(row.id, f"acr_{prefix}_{secret}", principal)


def authenticate(session: Session, presented: str) -> Principal:
    """The principal of a presented key.

    Raises
    ------
    AuthError
        Malformed, unknown or revoked key (one message for all: no oracle).
    """
    parsed = KEY_PATTERN.match(presented.strip())
    if parsed is None:
        raise AuthError("malformed API key")
    prefix, secret = parsed.groups()
    row = session.scalars(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if (
        row is None
        or row.revoked_at is not None
        or not hmac.compare_digest(row.secret_hash, _digest(secret))
    ):
        raise AuthError("unknown or revoked API key")
    return _principal(row)


def principal_of_key(session: Session, key_id: str) -> Principal | None:
    """The principal of a live key found by its id (a session that stored it); None if revoked."""
    row = session.scalars(
        select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
    ).first()
    return None if row is None else _principal(row)


def _principal(row: ApiKey) -> Principal:
    return Principal(row.id, Role(row.role), row.organisation_id, row.app_id)


KEY_CACHE_TTL_S = 5.0
"""How long a process trusts a key it authenticated without asking the database again:
the longest a revocation made in another process can take to reach this one."""


class KeyCache:
    """The principals of keys recently authenticated in this process, for ``ttl_s`` seconds.

    Only keys that authenticated are kept (an unknown or revoked key is looked
    up every time), under the SHA-256 of the presented key, not the key itself.
    Bounded: when ``max_keys`` are held, the expired ones go, or else all of them.

    Parameters
    ----------
    ttl_s : float
        Seconds a cached principal is trusted.
    max_keys : int
        Most keys held at once.
    clock : callable, optional
        Monotonic seconds; tests pass a fake one.
    """

    def __init__(
        self,
        ttl_s: float = KEY_CACHE_TTL_S,
        max_keys: int = 10_000,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._held: dict[str, tuple[Principal, float]] = {}
        """digest of the presented key -> (principal, when it expires)."""
        self._revocations = 0
        """Counts :meth:`forget` calls: a lookup that overlapped one is not kept."""

    def get(self, presented: str) -> Principal | None:
        """The principal of ``presented`` if it authenticated less than ``ttl_s`` ago."""
        held = self._held.get(_digest(presented))
        if held is None or held[1] <= self._clock():
            return None
        return held[0]

    def authenticate(self, session: Session, presented: str) -> Principal:
        """:func:`authenticate`, remembering a key that passes.

        Raises
        ------
        AuthError
            As :func:`authenticate`.
        """
        revocations = self._revocations
        principal = authenticate(session, presented)
        now = self._clock()
        with self._lock:
            if revocations != self._revocations:
                # The key may be the one just revoked, read before the revocation committed.
                return principal
            if len(self._held) >= self.max_keys:
                live = {k: v for k, v in self._held.items() if v[1] > now}
                self._held = live if len(live) < self.max_keys else {}
            self._held[_digest(presented)] = (principal, now + self.ttl_s)
        return principal

    def forget(self, key_id: str) -> None:
        """Stop trusting the key ``key_id`` (it was revoked in this process)."""
        with self._lock:
            self._revocations += 1
            self._held = {k: v for k, v in self._held.items() if v[0].key_id != key_id}


def revoke_key(session: Session, key_id: str) -> bool:
    """Revoke a key; False if there is no such live key. The caller commits."""
    row = session.get(ApiKey, key_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = utcnow()
    return True
