"""What an API key may do; a module of its own so that the command line can name the
roles without loading the database layer."""

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    CAMPAIGN_MANAGER = "campaign_manager"
    VIEWER_APP = "viewer_app"
