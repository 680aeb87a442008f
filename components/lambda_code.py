"""The Lambda source folders of this repository, packaged as Pulumi code assets."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pulumi

LAMBDAS_DIR = Path(__file__).resolve().parent.parent / "lambdas"


def package_archive(folder: Path) -> pulumi.AssetArchive:
    """The Python package in ``folder`` as a zip whose root holds ``<folder name>/``.

    Only ``.py`` files are taken, listed in a stable order, so that byte-code
    caches and editor files never change the archive and trigger a deploy.
    """
    if not (folder / "__init__.py").is_file():
        raise FileNotFoundError(f"{folder} is not a Python package (no __init__.py)")
    files = sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)
    return pulumi.AssetArchive(
        {
            f"{folder.name}/{path.relative_to(folder).as_posix()}": pulumi.FileAsset(str(path))
            for path in files
        }
    )


def archive_sha256(archive: pulumi.AssetArchive) -> str:
    """A digest of the archive's file names and contents: it changes exactly when the code does."""
    digest = hashlib.sha256()
    for name, asset in sorted(archive.assets.items()):
        digest.update(name.encode() + b"\0")
        if isinstance(asset, pulumi.FileAsset):
            digest.update(Path(str(asset.path)).read_bytes())
        elif isinstance(asset, pulumi.StringAsset):
            digest.update(str(asset.text).encode())
        elif isinstance(asset, pulumi.AssetArchive):
            digest.update(archive_sha256(asset).encode())
        digest.update(b"\0")
    return digest.hexdigest()
