"""Image references: which pin a version (the CRD and validate() agree), and which image an
approved run uses (the planned digest under spec.image's repository)."""

from __future__ import annotations

import pytest

from dbmigrate_operator import constants as c
from dbmigrate_operator import images
from dbmigrate_operator.actions import CreateJob
from dbmigrate_operator.reconcile import decide
from dbmigrate_operator.settings import Settings
from dbmigrate_operator.spec_rules import validate
from tests.operator.builders import T0, make_cr
from tests.operator.crd_support import (
    ACCEPTED_IMAGES,
    REFUSED_IMAGES,
    schema,
    with_image,
)
from tests.operator.crd_support import (
    validate as crd_validate,
)

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize("image", ACCEPTED_IMAGES)
def test_a_tag_or_a_digest_is_accepted_by_the_crd_and_the_operator(image: str) -> None:
    assert crd_validate(with_image(image)) == []
    assert images.unpinned(image) is None
    assert validate(with_image(image)["spec"]) is None


@pytest.mark.parametrize(("image", "reason"), REFUSED_IMAGES)
def test_untagged_or_latest_is_refused_with_the_same_words(image: str, reason: str) -> None:
    (error,) = crd_validate(with_image(image))
    assert error[:2] == ("spec.image", "cel")
    assert error[2].startswith(reason)
    assert validate(with_image(image)["spec"]) == error[2]  # an old CRD or no CEL: the same answer


def test_the_crd_rules_use_the_operators_patterns() -> None:
    rules = " ".join(
        r["rule"] for r in schema()["properties"]["spec"]["properties"]["image"]["x-kubernetes-validations"]
    )
    assert f"'{images.DIGEST_AT_END}'" in rules
    assert f"'{images.TAG_AT_END}'" in rules


def test_parse_tells_a_port_from_a_tag() -> None:
    assert images.parse("host:5000/app") == images.Reference("host:5000/app", "", "")
    assert images.parse("host:5000/app:1.0") == images.Reference("host:5000/app", "1.0", "")
    assert images.parse(f"app:1@{DIGEST}") == images.Reference("app", "1", DIGEST)
    assert images.parse(f"host:5000/a/b@{DIGEST}") == images.Reference("host:5000/a/b", "", DIGEST)


def test_the_planned_digest_under_spec_images_repository() -> None:
    assert (
        images.at_digest("reg.example.com/m:1.4.2", f"reg.example.com/m@{DIGEST}")
        == f"reg.example.com/m@{DIGEST}"
    )
    assert images.at_digest("m:1", f"docker.io/library/m@{DIGEST}") == f"m@{DIGEST}"
    assert (
        images.at_digest("host:5000/m:1", f"docker-pullable://host:5000/m@{DIGEST}")
        == f"host:5000/m@{DIGEST}"
    )
    assert images.at_digest(f"m:1@sha256:{'0' * 64}", f"m@{DIGEST}") == f"m@{DIGEST}"
    # No registry digest (an image loaded onto the node, an unset imageID): nothing to pin.
    for image_id in ("sha256:" + "e" * 64, "docker://sha256:" + "e" * 64, "", f"m@sha256:{'e' * 10}"):
        assert images.at_digest("m:1", image_id) is None, image_id


def test_an_untagged_image_that_got_past_admission_is_stalled_without_a_job() -> None:
    """An old CRD, or a cluster that did not run the CEL rules: the operator refuses it itself."""
    plan = decide(make_cr(image="localhost:5000/shop-migrations"), [], [], T0, Settings())
    assert plan.of(CreateJob) == []
    (stalled,) = [x for x in plan.status["conditions"] if x["type"] == c.STALLED]
    assert (stalled["status"], stalled["reason"]) == ("True", "InvalidSpec")
    assert stalled["message"] == images.UNTAGGED_MESSAGE
