from localcluster.postgres import PostgresServer


def test_fresh_database_is_empty_and_password_protected(postgres: PostgresServer, database: str) -> None:
    assert postgres.psql(database, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
    assert postgres.password in postgres.url(database)
