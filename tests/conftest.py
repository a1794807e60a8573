"""Shared fixtures: a real PostgreSQL per session, a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from localcluster.postgres import PostgresServer, running_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def database(postgres: PostgresServer) -> str:
    """Name of a fresh, empty database on the session server."""
    return postgres.create_database()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the real PostgreSQL, so `make unit` can leave them out."""
    for item in items:
        if {"postgres", "database"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)
