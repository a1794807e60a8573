"""What localcluster/images.py hashes as an image's inputs (no buildah needed)."""

from __future__ import annotations

from pathlib import Path

from localcluster.images import REFS, context_files, debian_mirrors, storage_ref
from tests.images.conftest import ROOT


def test_root_context_is_the_dockerignore_allow_list() -> None:
    files = context_files(ROOT)
    allowed = ("operator/dbmigrate_operator/", "migrations_image/dbmigrate_runner/")
    assert {"pyproject.toml", "uv.lock", "README.md"} <= set(files)
    assert "operator/dbmigrate_operator/__main__.py" in files
    assert "migrations_image/dbmigrate_runner/cli.py" in files
    assert all(f in {"pyproject.toml", "uv.lock", "README.md"} or f.startswith(allowed) for f in files)
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_shop_context_is_the_folder_without_bytecode(tmp_path: Path) -> None:
    files = context_files(ROOT / "examples" / "shop")
    assert {"Dockerfile", "pyproject.toml"} <= set(files)
    assert any(f.startswith("shop/migrations/") for f in files)
    assert any(f.startswith("migrations/models/") for f in files)
    assert not [f for f in files if "__pycache__" in f]


def test_a_context_without_dockerignore_is_what_git_knows(tmp_path: Path) -> None:
    files = context_files(ROOT / "examples" / "demo" / "app")
    assert files == ["Dockerfile", "index.html"]


def test_storage_tags_name_the_inputs_not_the_release() -> None:
    assert storage_ref(REFS["shop"], "ab" * 32) == "localhost/dbmigrate/shop-migrations:inputs-" + "ab" * 10


def test_the_debian_mirror_comes_from_apt_sources() -> None:
    mirror, security = debian_mirrors()
    assert mirror.startswith(("http://", "https://"))
    assert security.startswith(("http://", "https://"))
