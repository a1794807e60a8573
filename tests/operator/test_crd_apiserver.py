"""The CRD on a real kube-apiserver: examples accepted, every bad-CR case rejected with its message.

The same cases as the offline checks (tests/operator/invalid_crs), here with the API server's own
structural schema validation, defaulting and CEL.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.operator.crd_support import (
    ACCEPTED_IMAGES,
    ACCEPTED_VERSIONS,
    CRD_PATH,
    REFUSED_IMAGES,
    example_migrations,
    invalid_cases,
    with_image,
    with_version,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
CRD_NAME = "databasemigrations.dbmigrate.dev"


@pytest.fixture(scope="module")
def crd_installed(cluster: Any) -> Any:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_PATH))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{CRD_NAME}", "--timeout=60s")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # discovery catches up shortly after Established
        if cluster.kubectl("get", "dbm", "-A", check=False).returncode == 0:
            break
        time.sleep(0.5)
    return cluster


def create_dry_run(cluster: Any, obj: dict[str, Any], namespace: str) -> Any:
    obj = json.loads(json.dumps(obj))
    obj["metadata"]["namespace"] = namespace
    return cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(obj), check=False
    )


def test_examples_are_accepted_and_defaulted(crd_installed: Any, namespace: str) -> None:
    for name, obj in example_migrations():
        res = create_dry_run(crd_installed, obj, namespace)
        assert res.returncode == 0, (name, res.stderr)
        spec = json.loads(res.stdout)["spec"]
        assert spec["tool"] in ("aerich", "tortoise", "alembic")
        assert spec["historyLimit"] >= 1
        assert isinstance(spec["allowDowngrade"], bool)


def test_each_tool_accepts_its_versions(crd_installed: Any, namespace: str) -> None:
    refused = []
    for tool, field, value in ACCEPTED_VERSIONS:
        res = create_dry_run(crd_installed, with_version(tool, field, value), namespace)
        if res.returncode != 0:
            refused.append((tool, field, value, res.stderr.strip()))
    assert refused == []


def test_images_with_a_tag_or_digest_are_accepted_untagged_ones_refused(
    crd_installed: Any, namespace: str
) -> None:
    """An untagged image is :latest to the runtime: refused, also behind a registry port."""
    wrong = []
    for image in ACCEPTED_IMAGES:
        res = create_dry_run(crd_installed, with_image(image), namespace)
        if res.returncode != 0:
            wrong.append((image, res.stderr.strip()))
    for image, reason in REFUSED_IMAGES:
        res = create_dry_run(crd_installed, with_image(image), namespace)
        if res.returncode == 0 or reason not in res.stderr:
            wrong.append((image, res.stderr.strip()))
    assert wrong == []


def test_bad_crs_are_rejected_with_their_message(crd_installed: Any, namespace: str) -> None:
    failures = []
    for case in invalid_cases():
        res = create_dry_run(crd_installed, case.obj, namespace)
        if res.returncode == 0 or case.expect not in res.stderr:
            failures.append((case.name, case.expect, res.returncode, res.stderr.strip()))
    assert failures == []


def test_printer_columns(crd_installed: Any, namespace: str) -> None:
    (_name, obj) = example_migrations()[0]
    obj = json.loads(json.dumps(obj))
    obj["metadata"]["namespace"] = namespace
    crd_installed.kubectl("create", "-f", "-", input=json.dumps(obj))
    header = crd_installed.kubectl("get", "dbmigrations", "-n", namespace).stdout.splitlines()[0].split()
    assert header == ["NAME", "READY", "VERSION", "PHASE", "AGE"]
    wide = crd_installed.kubectl("get", "dbm", "-n", namespace, "-o", "wide").stdout.splitlines()[0].split()
    assert wide == ["NAME", "READY", "VERSION", "PHASE", "AGE", "IMAGE", "REASON"]
