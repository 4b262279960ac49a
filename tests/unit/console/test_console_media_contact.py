"""Photos and reporter contact: magic bytes, size, the photo gate, and who sees a reporter's contact."""

from __future__ import annotations

from dataclasses import replace
from zoneinfo import ZoneInfo

import orjson
import pytest

from case_bridge.errors import MediaRejected, PhotosMissing
from case_bridge.media import check_upload, photo_gate, sniff_image
from case_bridge.workflow import Action, Role
from console import open311, serialize
from console.errors import BadRequest
from console.policy import Principal, contact_visible, media_upload_allowed
from console.policy import Role as Seat
from console.views import CaseView

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
CONTACT = {"first_name": "Li", "last_name": "Wei", "phone": "13800000000", "email": "li@example.cn"}
CASE = CaseView(id="42", category="S0111", category_name="道路积水", unit="lingyin-street", unit_name="灵隐街道办事处",
                state="dispatched", urgency="urgent", created_at=1764057600.0, updated_at=1764057900.0,
                source="open311", contact=dict(CONTACT), media_url="https://photos.example.cn/42.jpg",
                media=({"id": "ab12", "stage": "after", "content_type": "image/png", "size_bytes": 40,
                        "sha256": "0" * 64, "file": "42/" + "0" * 64 + ".png", "t": 1.0, "by": "handler-a"},))


@pytest.mark.parametrize(("data", "kind"), [(JPEG, "image/jpeg"), (PNG, "image/png"), (WEBP, "image/webp")])
def test_images_are_recognised_by_their_magic_bytes(data: bytes, kind: str) -> None:
    assert sniff_image(data) == kind
    assert check_upload(data, 1024) == kind


@pytest.mark.parametrize("data", [b"GIF89a" + b"\x00" * 40, b"<svg xmlns='http://www.w3.org/2000/svg'/>",
                                  b"%PDF-1.7", b"RIFF\x00\x00\x00\x00WAVE", b"\xff\xd8", b""])
def test_anything_else_is_refused_whatever_it_claims(data: bytes) -> None:
    with pytest.raises(MediaRejected):
        check_upload(data, 1024)


def test_an_upload_over_the_configured_size_is_refused() -> None:
    with pytest.raises(MediaRejected, match="over the limit of 40 bytes"):
        check_upload(JPEG, 40)


def test_a_category_requiring_photos_needs_before_and_after_to_report_the_fix() -> None:
    before = [{"stage": "before"}]
    with pytest.raises(PhotosMissing, match="attach after first") as exc:
        photo_gate("in_handling", Action.REPORT_FIX, Role.HANDLER, True, before)
    assert exc.value.missing == ("after",)
    photo_gate("in_handling", Action.REPORT_FIX, Role.HANDLER, True, [*before, {"stage": "after"}])
    photo_gate("in_handling", Action.REPORT_FIX, Role.HANDLER, False, [])  # not required
    photo_gate("in_handling", Action.REQUEST_EXTENSION, Role.HANDLER, True, [])  # other actions pass


def test_contact_only_for_command_and_supervision_never_for_handlers_or_machines() -> None:
    assert contact_visible(Principal("duty", Seat.DUTY_OFFICER), "lingyin-street")
    assert contact_visible(Principal("sup", Seat.SUPERVISOR), "lingyin-street")
    assert not contact_visible(Principal("h", Seat.CASE_HANDLER, "lingyin-street"), "lingyin-street")
    assert not contact_visible(Principal("h", Seat.CASE_HANDLER, "water-supply"), "lingyin-street")
    assert not contact_visible(Principal("app", None, api_key=True), "lingyin-street")
    assert media_upload_allowed(Principal("h", Seat.CASE_HANDLER, "lingyin-street"), "lingyin-street")
    assert not media_upload_allowed(Principal("h", Seat.CASE_HANDLER, "water-supply"), "lingyin-street")
    assert not media_upload_allowed(Principal("duty", Seat.DUTY_OFFICER), "lingyin-street")


def test_serialised_case_leaves_contact_out_unless_asked_and_never_shows_the_storage_path() -> None:
    plain = serialize.case(CASE, 1764058000.0)
    assert "contact" not in plain
    assert plain["media"] == [{"id": "ab12", "stage": "after", "content_type": "image/png", "size_bytes": 40,
                               "t": 1.0, "by": "handler-a", "url": "/api/v1/cases/42/media/ab12"}]
    assert serialize.case(CASE, 1764058000.0, contact=True)["contact"] == CONTACT


def test_public_open311_output_has_no_contact_and_no_private_upload() -> None:
    req = open311.request(CASE, ZoneInfo("Asia/Shanghai"), now=1764058000.0)
    text = orjson.dumps(req).decode() + open311.xml_list("requests", [req]).decode()
    for secret in (*CONTACT.values(), "/media/ab12", "0" * 64):
        assert secret not in text
    assert req["media_url"] == "https://photos.example.cn/42.jpg"  # the reporter's own link is kept
    assert open311.request(replace(CASE, media_url=""), ZoneInfo("Asia/Shanghai"), now=0.0)["media_url"] == ""


@pytest.mark.parametrize("url", ["javascript:alert(1)", "ftp://x/y.jpg", "https://a b", "https://x/" + "a" * 1000])
def test_a_media_url_that_is_not_http_is_refused(url: str) -> None:
    with pytest.raises(BadRequest, match="media_url"):
        open311.media_url(url)
