"""Alembic environment and versions: the only way vitcube's schema is made.

An installed package so that `service.db.alembic_config()` finds these scripts from a wheel as
well as from a checkout. Imports service.tables (for autogenerate) and nothing else of ours.
"""
