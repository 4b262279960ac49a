"""The case photo files on disk: the only module that reads or writes them (an I/O edge).

Files are content-addressed (``<case id>/<sha256>.<ext>``) under the configured ``media_dir``;
a name is only ever built from our own metadata and checked against one pattern, so no request
can name a path outside it. Access control is the caller's: the API serves a file only through
a case the principal may read (:mod:`console.api`).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

from case_bridge.media import IMAGE_TYPES
from console.errors import NotFound

_NAME = re.compile(r"^[0-9]{1,18}/[0-9a-f]{64}\.(jpg|png|webp)$")


def store(root: Path, case_id: str, data: bytes, content_type: str) -> tuple[str, str]:
    """Write ``data`` (already checked) for ``case_id``; returns (relative name, sha256). Atomic."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{int(case_id)}/{digest}.{IMAGE_TYPES[content_type]}"
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return name, digest


def read(root: Path, name: str) -> bytes:
    """The bytes of a stored file named by case metadata; NotFound when it is not (or no longer) there."""
    if not _NAME.match(name):
        raise NotFound("no such file")
    try:
        return (root / name).read_bytes()
    except FileNotFoundError:
        raise NotFound("the file of this photo is missing from the media directory") from None
