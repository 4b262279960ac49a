"""Photos and media on a case: what an upload is, and which photos a fix report needs. Pure.

A handler attaches photos taken before and after the fix (处置前后照片); a category may require
both before 处置 can be reported (``photos_required`` in the category table). An upload is
accepted by its magic bytes, never by its file name or declared type (JPEG, PNG, WebP only), and
by size. The bytes live in a configured directory (the console's ``media_dir``; an S3-compatible
store is not implemented); the case keeps one metadata entry per file in ``data["media"]``, so
the file is read only through the case (same object-level access as reading the case).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from case_bridge.errors import MediaRejected, PhotosMissing
from case_bridge.workflow import Action, Role

Stage = Literal["before", "after", "report"]  # 处置前, 处置后, a reporter's (citizen/patrol) photo
STAGES: tuple[Stage, ...] = ("before", "after", "report")
#: content type -> file extension; nothing else is stored
IMAGE_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}


def sniff_image(data: bytes) -> str | None:
    """The image type the bytes really are (JPEG, PNG, WebP), or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def check_upload(data: bytes, max_bytes: int) -> str:
    """The content type of an acceptable upload; raises :class:`MediaRejected` saying why not."""
    if not data:
        raise MediaRejected("empty upload")
    if len(data) > max_bytes:
        raise MediaRejected(f"upload of {len(data)} bytes is over the limit of {max_bytes} bytes")
    kind = sniff_image(data)
    if kind is None:
        raise MediaRejected("not a JPEG, PNG or WebP image (checked by its content, not its name)")
    return kind


def media_of(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The media entries a case's ``data`` holds (oldest first)."""
    items = data.get("media")
    return [m for m in items if isinstance(m, dict)] if isinstance(items, list) else []


def photo_gate(state: str, action: Action | str, role: Role | None, required: bool,
               media: Sequence[Mapping[str, Any]]) -> None:
    """Refuse a person's 处置 report (``report_fix``) that lacks the photos its category requires."""
    if not required or Action(action) is not Action.REPORT_FIX or role is Role.SYSTEM:
        return
    have = {m.get("stage") for m in media}
    missing = tuple(s for s in ("before", "after") if s not in have)
    if missing:
        raise PhotosMissing(state, Action(action).value, missing)
