"""Service configuration, read from the environment (``ACR_*``) or a ``.env`` file.

One :class:`Settings` object is built at start-up and passed down; nothing reads
the environment anywhere else.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Everything ``acr serve`` can be told.

    Paths default to a ``data`` directory beside the working directory, so that
    a fresh checkout runs with an embedded SQLite database and no setup.
    """

    model_config = SettingsConfigDict(
        env_prefix="ACR_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("data")
    database_url: str = ""
    """SQLAlchemy URL; empty means SQLite at ``data_dir/acr.db``."""
    index_dir: Path | None = None
    """Fingerprint index; empty means ``data_dir/index``."""
    media_dir: Path | None = None
    """Uploaded reference media; empty means ``data_dir/media``."""
    secret_key: str = ""
    """Keys the viewer-id hash. Empty: generated once and kept in ``data_dir/secret_key``."""
    redis_url: str = ""
    """Rate limits are shared through Redis when set, kept in-process otherwise."""

    max_upload_bytes: int = Field(default=2048 * MIB, gt=0)
    """Largest reference media upload."""
    max_sample_bytes: int = Field(default=20 * MIB, gt=0)
    """Largest sample (media or fingerprints) sent to ``/v1/match``."""
    max_sample_seconds: float = Field(default=30.0, gt=0)
    max_payload_bytes: int = Field(default=16 * 1024, gt=0)
    """Largest campaign payload, as JSON."""
    min_confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    """Extra floor on match confidence; 0 keeps the matcher's calibrated threshold."""
    rate_limit_per_minute: int = Field(default=1200, gt=0)
    """Match requests per viewer-app key per minute (token bucket, bursts up to this)."""
    import_roots: list[Path] = Field(default_factory=list)
    """Server directories whose files admins may register as content by path."""
    ray_address: str = ""
    """Serve matches from a sharded index on this Ray cluster (``HOST:PORT``, or ``auto``);
    empty serves the index in-process. The index directory must be on shared storage."""
    shards: int = Field(default=4, ge=1)
    replicas: int = Field(default=2, ge=1)
    """Replicas of each shard, on different nodes where the cluster has them."""
    shard_timeout_s: float = Field(default=10.0, gt=0)
    """Longest wait for one replica before another replica of its shard is asked."""
    scheduler_interval_s: float = Field(default=5.0, gt=0)
    """How often schedules are applied (campaign start/end)."""
    indexer_poll_s: float = Field(default=1.0, gt=0)
    instant_payout_fee_bps: int = Field(default=150, ge=0, le=10_000)
    """Fee of an instant payout, in basis points of its amount (Stripe's is 1.5 %)."""
    instant_payout_fee_min: int = Field(default=50, ge=0)
    """Least fee of an instant payout, in minor units of its currency."""
    log_level: str = "INFO"

    payout_rail: str = "simulated"
    """Where payouts are sent: ``simulated`` (the built-in bank) or ``stripe``."""
    stripe_api_key: str = Field(
        default="",
        validation_alias=AliasChoices("stripe_api_key", "ACR_STRIPE_API_KEY", "STRIPE_API_KEY"),
    )
    """Secret key of the platform's Stripe account (``sk_…``), for the Stripe rail."""
    stripe_webhook_secret: str = Field(
        default="",
        validation_alias=AliasChoices(
            "stripe_webhook_secret", "ACR_STRIPE_WEBHOOK_SECRET", "STRIPE_WEBHOOK_SECRET"
        ),
    )
    """Signing secret (``whsec_…``) of the webhook endpoint Stripe posts to."""
    stripe_api_base: str = Field(
        default="",
        validation_alias=AliasChoices("stripe_api_base", "ACR_STRIPE_API_BASE", "STRIPE_API_BASE"),
    )
    """Another Stripe API address (a local test server); empty means Stripe's own."""

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'acr.db').resolve()}"
        if self.index_dir is None:
            self.index_dir = self.data_dir / "index"
        if self.media_dir is None:
            self.media_dir = self.data_dir / "media"
        return self

    @property
    def index_path(self) -> Path:
        assert self.index_dir is not None
        return self.index_dir

    @property
    def media_path(self) -> Path:
        assert self.media_dir is not None
        return self.media_dir

    def viewer_secret(self) -> bytes:
        """The key of the viewer-id hash, created and kept on first use if not configured."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            tmp.replace(path)
        return path.read_text().strip().encode()
