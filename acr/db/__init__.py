"""The service database: models, sessions and migrations."""
