"""Render the argocd-cm snippet from health.lua (the single source), for the file and the docs.

``python -m tests.argocd.render_cm`` rewrites argocd/argocd-cm-patch.yaml and the marked block in
docs/argocd.md; tests/argocd/test_docs.py fails when either has drifted from health.lua.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK_DIR = ROOT / "argocd" / "resource_customizations" / "dbmigrate.dev" / "DatabaseMigration"
HEALTH_LUA = CHECK_DIR / "health.lua"
PATCH_FILE = ROOT / "argocd" / "argocd-cm-patch.yaml"
DOC_FILE = ROOT / "docs" / "argocd.md"
CM_KEY = "resource.customizations.health.dbmigrate.dev_DatabaseMigration"
DOC_BLOCK = re.compile(
    r"(<!-- argocd-cm:begin[^>]*-->\n)```yaml\n.*?```\n(<!-- argocd-cm:end -->)", re.DOTALL
)


def render_patch(lua: str) -> str:
    """A merge patch for the argocd-cm ConfigMap carrying health.lua verbatim."""
    body = "".join(f"    {line}\n" if line else "\n" for line in lua.rstrip("\n").split("\n"))
    return (
        "# Generated from argocd/resource_customizations/dbmigrate.dev/DatabaseMigration/health.lua\n"
        "# by `python -m tests.argocd.render_cm`; do not edit by hand.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: argocd-cm\n"
        "  namespace: argocd\n"
        "  labels:\n"
        "    app.kubernetes.io/name: argocd-cm\n"
        "    app.kubernetes.io/part-of: argocd\n"
        "data:\n"
        f"  {CM_KEY}: |\n"
        f"{body}"
    )


def render_doc(doc: str, patch: str) -> str:
    new, count = DOC_BLOCK.subn(lambda m: f"{m.group(1)}```yaml\n{patch}```\n{m.group(2)}", doc)
    if count != 1:
        raise ValueError(f"{DOC_FILE} must hold exactly one argocd-cm:begin/end block, found {count}")
    return new


def main() -> None:
    patch = render_patch(HEALTH_LUA.read_text())
    PATCH_FILE.write_text(patch)
    DOC_FILE.write_text(render_doc(DOC_FILE.read_text(), patch))
    print(f"wrote {PATCH_FILE.relative_to(ROOT)} and {DOC_FILE.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
