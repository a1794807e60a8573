"""What an image reference pins, and which exact image an approved run uses. Pure.

Two decisions live here because both read the same grammar (``[host[:port]/]path[:tag][@digest]``):

* ``spec.image`` must name a version: a tag other than ``latest``, or a digest. A name without
  either is ``:latest`` to the container runtime, so it is refused like ``:latest`` itself. A
  registry port is not a tag: ``host:5000/app`` names no version (the tag is only ever after the last
  ``/``).
* An approved run uses the image the plan ran from. The kubelet reports the image a container
  ran as its ``imageID``: ``repository@sha256:…`` when the image came from a registry. The run's
  Job then names ``spec.image``'s repository at that digest, so a tag moved between the plan and
  the run changes nothing. A node that reports no registry digest (an image loaded onto the node,
  never pulled: ``sha256:<image id>`` only) leaves nothing to pin; the run then uses ``spec.image``
  and the runner's re-made plan (which covers every pending migration file's bytes) is the check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The digest at the end of an imageID: "repo@sha256:<64 hex>", also with the docker-pullable:// scheme
# older runtimes put in front.
_REPO_DIGEST = re.compile(r"^(?:[a-z-]+://)?[^@\s]+@(sha256:[0-9a-f]{64})$")


@dataclass(frozen=True)
class Reference:
    """An image reference cut into its parts (``tag``/``digest`` empty when absent)."""

    repository: str
    tag: str
    digest: str


def parse(image: str) -> Reference:
    """Split ``[host[:port]/]path[:tag][@digest]``; a colon before the last ``/`` is a port, not a tag."""
    rest, _, digest = image.strip().partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return Reference(rest[:colon], rest[colon + 1 :], digest)
    return Reference(rest, "", digest)


# The CRD's CEL rules on spec.image use these same patterns (a test holds them equal): a digest at the
# end, or (no digest at all) a tag after the last colon with no "/" after it.
DIGEST_AT_END = "@[a-z0-9]+([+._-][a-z0-9]+)*:[0-9a-fA-F]{32,}$"
TAG_AT_END = "^[^@]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
LATEST_MESSAGE = (
    "spec.image must not use the :latest tag: a changed image behind the same name would never be "
    "migrated; pin a version tag or a digest"
)
UNTAGGED_MESSAGE = (
    "spec.image must name a tag or a digest: without one the runtime pulls :latest, and a changed "
    "image behind the same name would never be migrated"
)


def unpinned(image: str) -> str | None:
    """Why ``image`` names no fixed version, or None when it does (a tag other than latest, or a
    digest). The same decision and words as the CRD's rules, for a cluster that did not check them."""
    if image.endswith(":latest"):
        return LATEST_MESSAGE
    if re.search(DIGEST_AT_END, image) or re.search(TAG_AT_END, image):
        return None
    return UNTAGGED_MESSAGE


def digest_of(image_id: str) -> str | None:
    """``sha256:…`` when the kubelet's ``imageID`` names a registry digest, else None."""
    match = _REPO_DIGEST.match(image_id.strip())
    return match.group(1) if match else None


def at_digest(image: str, image_id: str) -> str | None:
    """``image``'s repository at the digest ``image_id`` reports (``repo@sha256:…``): the exact image
    a container ran, pulled again by content. None when ``image_id`` has no registry digest."""
    digest = digest_of(image_id)
    if digest is None:
        return None
    return f"{parse(image).repository}@{digest}"
