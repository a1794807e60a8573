"""Pod gating: hold opted-in pods with a scheduling gate until their migration is applied.

Importing this package registers the kopf handlers (webhook, release on DatabaseMigration events,
startup/cleanup of the server and the periodic sweep) in kopf's default registry.
"""

from dbmigrate_operator.gating import release, runtime, webhook

__all__ = ["release", "runtime", "webhook"]
