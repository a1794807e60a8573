"""Benchmarks of dbmigrate-operator (`make bench`, `python -m bench`): see docs/benchmarks.md."""
