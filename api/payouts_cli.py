"""``acr payouts``: check the ledger (``verify``) and run the payouts machinery once (``run``).

``acr payouts verify`` checks the ledger's invariants
(:func:`acr.payouts.ledger.verify`: every transaction balances, every currency
sums to zero, every balance transaction's net is what it booked on its
account) and the per-account ones (:func:`acr.payouts.balance.account_problems`:
each account's balance equals its balance transactions, every book names an
account), and lists the engagements that accrual set aside as bad data
(:func:`acr.payouts.revenue.unaccruable_engagements`: their revenue is in no
ledger until the row is repaired). It prints each problem and exits 1 if there
is any, 0 otherwise.

``acr payouts run`` makes one pass of :func:`acr.payouts.scheduler.run_once`
(accrue revenue, make due automatic payouts, submit them, follow the rails):
for cron, when ``acr serve`` does not run the payouts task.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from acr.cli import EXIT_FAILED, EXIT_OK, Command, register

if TYPE_CHECKING:
    from acr.settings import Settings


def _configure(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser("verify", help="check the ledger's invariants; exit 1 if broken")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")
    run = actions.add_parser("run", help="one pass: accrue, pay who is due, follow the rails")
    run.add_argument("--json", action="store_true", help="print the summary as JSON")


def verify_database(database_url: str) -> tuple[list[str], dict[str, int]]:
    """The problems of the ledger at ``database_url``, and what was checked."""
    from sqlalchemy import func, select

    from acr.db.models import Account, LedgerEntry, LedgerTransaction
    from acr.db.session import make_engine, session_factory
    from acr.payouts.balance import account_problems
    from acr.payouts.ledger import verify
    from acr.payouts.revenue import unaccruable_engagements

    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as session:
            problems = verify(session) + account_problems(session)
            problems += [
                f"engagement {engagement_id} is not accrued: {reason}"
                for engagement_id, reason in unaccruable_engagements(session)
            ]
            counts = {
                "accounts": int(session.scalar(select(func.count()).select_from(Account)) or 0),
                "transactions": int(
                    session.scalar(select(func.count()).select_from(LedgerTransaction)) or 0
                ),
                "entries": int(session.scalar(select(func.count()).select_from(LedgerEntry)) or 0),
            }
    finally:
        engine.dispose()
    return problems, counts


def _verify(settings: Settings, as_json: bool) -> int:
    problems, counts = verify_database(settings.database_url)
    if as_json:
        print(json.dumps({"ok": not problems, "problems": problems, **counts}), flush=True)
    else:
        for problem in problems:
            print(f"acr: ledger: {problem}", file=sys.stderr, flush=True)
        verdict = f"{len(problems)} problem(s)" if problems else "ok"
        print(
            f"ledger {verdict}: {counts['transactions']} transactions, "
            f"{counts['entries']} entries, {counts['accounts']} accounts",
            flush=True,
        )
    return EXIT_FAILED if problems else EXIT_OK


def _run_pass(settings: Settings, as_json: bool) -> int:
    from acr.payouts.scheduler import run_once

    document = run_once(settings).as_dict()
    print(json.dumps(document) if as_json else "\n".join(f"{k}: {v}" for k, v in document.items()))
    return EXIT_OK


def _run(args: argparse.Namespace) -> int:
    from acr.db.session import migrate
    from acr.settings import Settings

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.database_url)
    if args.action == "verify":
        return _verify(settings, args.json)
    return _run_pass(settings, args.json)


register(
    Command(
        name="payouts",
        help="check the ledger (verify) or run the payouts machinery once (run)",
        description=__doc__ or "",
        configure=_configure,
        run=_run,
    )
)
