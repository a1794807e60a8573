"""Names that are part of the user-facing contract (../shared/DESIGN.md)."""

GROUP = "dbmigrate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "DatabaseMigration"
PLURAL = "databasemigrations"

# Pod gating (DESIGN.md "Gating Deployments").
WAIT_FOR_LABEL = f"{GROUP}/wait-for"
WAIT_FOR_VERSION_ANNOTATION = f"{GROUP}/wait-for-version"
SCHEDULING_GATE = f"{GROUP}/migration"

# Labels the operator puts on the Jobs it owns, so it can list them by selector.
MIGRATION_LABEL = f"{GROUP}/migration"  # value: the DatabaseMigration's name
RUN_HASH_LABEL = f"{GROUP}/run-hash"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "dbmigrate-operator"

# `kubectl annotate dbm NAME dbmigrate.dev/rerun="$(date +%s)" --overwrite` asks for a new run.
RERUN_ANNOTATION = f"{GROUP}/rerun"

# Present on a DatabaseMigration only while one of its migration Jobs may be running: deleting the
# resource then waits for the run to end instead of garbage collection killing it mid-migration.
# Force (the run is killed): kubectl patch dbm NAME --type=json \
#   -p '[{"op":"remove","path":"/metadata/finalizers"}]'  (docs/operator.md#deleting).
RUN_FINALIZER = f"{GROUP}/run-in-progress"

# Plans and approval (spec.approval: OnDestructive / Manual): `kubectl annotate dbm NAME
# dbmigrate.dev/approve=<plan hash> --overwrite` approves that plan, as spec.approvedPlan does from Git.
APPROVE_ANNOTATION = f"{GROUP}/approve"
APPROVAL_MODES = ("Auto", "OnDestructive", "Manual")

# kstatus condition types on DatabaseMigration.status.conditions (Argo CD health and pod gating read them).
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"

# The migration container's name in every Job the operator creates.
CONTAINER_NAME = "migrate"

# The one app of `tool: alembic` in the report and status (`currentVersion: alembic:<revision>`).
ALEMBIC_APP = "alembic"
