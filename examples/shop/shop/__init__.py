"""Example Tortoise ORM app for dbmigrate-operator (kept import-free so the runner stays lean)."""
