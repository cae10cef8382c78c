"""Campaigns: what advertisers show viewers while matched content plays.

* :mod:`~acr.campaigns.lifecycle` — statuses, manual actions, schedule, day-parting (pure).
* :mod:`~acr.campaigns.changes` — state changes with their events; the scheduler tick
  :func:`apply_schedules`.
* :mod:`~acr.campaigns.serving` — :func:`serve`: campaigns for a matched moment, with
  budgets and frequency caps enforced atomically.
* :mod:`~acr.campaigns.reports` — engagements, unique viewers and spend by period.
* :mod:`~acr.campaigns.documents` — campaigns as JSON (API bodies, event data).
"""

from acr.campaigns.changes import apply_schedules
from acr.campaigns.serving import Moment, ServedCampaign, serve

__all__ = ["Moment", "ServedCampaign", "apply_schedules", "serve"]
