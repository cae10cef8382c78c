"""The service's ``acr`` subcommands: ``serve`` and ``keys``.

Registered into :data:`acr.cli.COMMANDS` when the ``acr`` command starts, so
that there is one command line for the core and the service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from acr.cli import EXIT_FAILED, EXIT_OK, Command, register
from acr.roles import Role

if TYPE_CHECKING:
    from acr.settings import Settings

# The database layer and the web stack are imported by the commands that use them,
# so that `acr match` and the other core commands start without them.


def prepare(settings: Settings) -> None:
    """Make the data directory usable: schema migrated, index created, secret kept."""
    from acr.db.session import migrate
    from acr.index.store import Index

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    if not (settings.index_path / "catalogue.sqlite").exists():
        Index.open(settings.index_path, create=True).close()
    settings.viewer_secret()


def _configure_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes; matching scales with processes (one index lookup at a time each)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="seed a demo catalogue, campaign and API keys on first start and print a curl",
    )


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from acr.settings import Settings
    from api.observability import configure_logging

    settings = Settings()
    prepare(settings)
    if args.demo:
        from acr.demo_service import seed_demo

        print(seed_demo(settings, base_url=f"http://{args.host}:{args.port}"), flush=True)
    # Worker processes build their own Settings from the environment: pass them the same.
    os.environ["ACR_DATA_DIR"] = str(settings.data_dir)
    os.environ["ACR_DATABASE_URL"] = settings.database_url
    os.environ["ACR_INDEX_DIR"] = str(settings.index_path)
    os.environ["ACR_MEDIA_DIR"] = str(settings.media_path)
    if args.workers > 1:
        metrics_dir = settings.data_dir / "metrics"
        metrics_dir.mkdir(parents=True, exist_ok=True)
        for stale in metrics_dir.glob("*.db"):
            stale.unlink()
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    configure_logging(settings.log_level)
    options: dict[str, Any] = {
        "factory": True,
        "host": args.host,
        "port": args.port,
        "workers": args.workers,
        "log_config": None,
        "access_log": False,
    }
    if args.workers > 1:
        from api import workers

        workers.serve(uvicorn.Config("api.app:create_app", **options))
    else:
        uvicorn.run("api.app:create_app", **options)
    return EXIT_OK


def _configure_keys(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="issue a key and print it (shown only once)")
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--organisation", help="advertiser slug (campaign_manager keys)")
    create.add_argument("--app", help="viewer app slug (viewer_app keys)")
    create.add_argument("--name", default="", help="a note on what the key is for")
    create.add_argument("--json", action="store_true", help="print the key as JSON")
    actions.add_parser("list", help="list keys (never their secrets)").add_argument(
        "--json", action="store_true", help="one JSON object per key"
    )
    revoke = actions.add_parser(
        "revoke", help="revoke a key by id (a running server refuses it within seconds)"
    )
    revoke.add_argument("key_id")


def _run_keys(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from acr.auth import KeyScopeError, create_key, revoke_key
    from acr.db.models import ApiKey
    from acr.db.session import make_engine, session_factory, write_session
    from acr.settings import Settings

    settings = Settings()
    prepare(settings)
    engine = make_engine(settings.database_url)
    try:
        with write_session(session_factory(engine)) as session:
            if args.action == "create":
                try:
                    created = create_key(
                        session,
                        Role(args.role),
                        organisation=args.organisation,
                        app=args.app,
                        name=args.name,
                    )
                except KeyScopeError as error:
                    print(f"acr: error: {error}", file=sys.stderr, flush=True)
                    return EXIT_FAILED
                session.commit()
                record: dict[str, Any] = {
                    "id": created.key_id,
                    "role": created.principal.role.value,
                    "organisation_id": created.principal.organisation_id,
                    "app_id": created.principal.app_id,
                    "secret": created.secret,
                }
                if args.json:
                    print(json.dumps(record))
                else:
                    print(
                        f"{created.secret}\n(key {created.key_id}; the secret is not shown again)"
                    )
            elif args.action == "list":
                for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at)):
                    view = {
                        "id": row.id,
                        "name": row.name,
                        "role": row.role,
                        "organisation_id": row.organisation_id,
                        "app_id": row.app_id,
                        "created_at": row.created_at.isoformat(),
                        "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None,
                    }
                    print(
                        json.dumps(view) if args.json else "\t".join(str(v) for v in view.values())
                    )
            else:
                if not revoke_key(session, args.key_id):
                    print(f"acr: error: no live key {args.key_id!r}", file=sys.stderr, flush=True)
                    return EXIT_FAILED
                session.commit()
                print(f"revoked {args.key_id}")
    finally:
        engine.dispose()
    return EXIT_OK


register(
    Command(
        name="serve",
        help="run the HTTP service",
        description=(
            "Run the HTTP API (uvicorn). Configuration comes from ACR_* environment variables "
            "or a .env file: ACR_DATA_DIR, ACR_DATABASE_URL (SQLite in the data directory by "
            "default; postgresql+psycopg://... in production), ACR_INDEX_DIR, ACR_MEDIA_DIR, "
            "ACR_REDIS_URL, limits. The schema is migrated on start."
        ),
        configure=_configure_serve,
        run=_run_serve,
    )
)
register(
    Command(
        name="keys",
        help="create, list and revoke API keys",
        description=(
            "API keys for the HTTP service: admin, campaign_manager (one organisation) or "
            "viewer_app (one app). The organisation or app is created if its slug is new."
        ),
        configure=_configure_keys,
        run=_run_keys,
    )
)
