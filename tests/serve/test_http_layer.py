"""The HTTP layer without Ray: request parsing, image validation, names, auth, error bodies.

Requests are real Starlette ``Request`` objects over an ASGI scope and a receive channel
that delivers the body in chunks, as a server would.
"""

from __future__ import annotations

import asyncio
import base64
import pickle

import pytest
from starlette.requests import Request
from urllib3 import encode_multipart_formdata

from serve.api import NAME_PATTERN, canonical_generator
from serve.auth import KeyCheck, resolve_api_key
from serve.errors import ApiError, rejected_images
from serve.uploads import Limits, Upload, parse_uploads, validate_uploads
from tests.data.imagetrees import bomb_png_bytes, corrupt_png_bytes, image_bytes, truncated_bytes

LIMITS = Limits(max_bytes=64 * 1024, max_pixels=1_000_000, max_files=4)


def request(body: bytes, content_type: str | None, chunk: int = 1000, declare_length: bool = True) -> Request:
    headers = [(b"content-type", content_type.encode())] if content_type else []
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    parts = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive() -> dict:
        data = parts.pop(0) if parts else b""
        return {"type": "http.request", "body": data, "more_body": bool(parts)}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}
    return Request(scope, receive)


def parse(body: bytes, content_type: str | None, **kw) -> list[Upload]:
    return asyncio.run(parse_uploads(request(body, content_type, **kw), LIMITS))


def refused(body: bytes, content_type: str | None, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body, content_type, **kw)
    return info.value


def multipart(files: list[tuple[str, bytes]], extra: dict | None = None) -> tuple[bytes, str]:
    fields = [("files", (name, data, "application/octet-stream")) for name, data in files]
    fields += list((extra or {}).items())
    return encode_multipart_formdata(fields)


def test_multipart_json_and_raw_bodies_give_the_same_images():
    a, b = image_bytes(seed=1), image_bytes(seed=2)
    body, ctype = multipart([("a.png", a), ("b.png", b)])
    assert [(u.name, u.data) for u in parse(body, ctype)] == [("a.png", a), ("b.png", b)]
    doc = {
        "images": [
            base64.b64encode(a).decode(),
            {"name": "b.png", "data": "data:image/png;base64," + base64.b64encode(b).decode()},
        ]
    }
    import json

    assert [(u.name, u.data) for u in parse(json.dumps(doc).encode(), "application/json")] == [
        ("image-0", a),
        ("b.png", b),
    ]
    assert [u.data for u in parse(a, "image/png")] == [a]


@pytest.mark.parametrize("declare_length", [True, False])
def test_body_over_the_byte_limit_is_413_whether_declared_or_streamed(declare_length):
    err = refused(b"x" * (LIMITS.max_bytes + 1), "image/png", declare_length=declare_length)
    assert (err.status, err.code) == (413, "too_large")


def test_too_many_files_is_422_in_multipart_and_json():
    body, ctype = multipart([(f"{i}.png", image_bytes(seed=i)) for i in range(LIMITS.max_files + 1)])
    assert (refused(body, ctype).status, refused(body, ctype).code) == (422, "too_many_files")
    doc = '{"images": [' + ", ".join(['"AAAA"'] * (LIMITS.max_files + 1)) + "]}"
    assert refused(doc.encode(), "application/json").code == "too_many_files"


@pytest.mark.parametrize(
    "body, ctype, status, code",
    [
        (b"", "image/png", 400, "empty_body"),
        (b"abc", "text/plain", 415, "unsupported_media_type"),
        (b"abc", None, 415, "unsupported_media_type"),
        (b"{not json", "application/json", 400, "bad_json"),
        (b'{"pictures": []}', "application/json", 400, "bad_json"),
        (b'{"images": [42]}', "application/json", 400, "bad_json"),
        (b'{"images": ["***"]}', "application/json", 400, "bad_base64"),
        (b'{"images": []}', "application/json", 400, "no_images"),
        (b"--xyz--\r\n", "multipart/form-data", 400, "bad_multipart"),  # no boundary parameter
    ],
)
def test_malformed_requests_get_a_clear_4xx(body, ctype, status, code):
    err = refused(body, ctype)
    assert (err.status, err.code) == (status, code)
    assert err.message


def test_text_form_fields_are_refused():
    body, ctype = multipart([("a.png", image_bytes())], extra={"note": "hello"})
    assert refused(body, ctype).code == "bad_multipart"


def flat_png(width: int, height: int) -> bytes:
    """A real, fully decodable PNG of one colour: many pixels in few bytes."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, "PNG")
    return buf.getvalue()


def test_validation_keeps_good_images_and_names_each_bad_one():
    uploads = [
        Upload("ok.png", image_bytes(seed=3)),
        Upload("cut.jpg", truncated_bytes("JPEG")),
        Upload("text.png", b"not an image at all"),
        Upload("bomb.png", bomb_png_bytes()),
        Upload("big.png", flat_png(1200, 1000)),
        Upload("scrambled.png", corrupt_png_bytes()),
        Upload("icon.ico", image_bytes(fmt="ICO")),
        Upload("empty.png", b""),
    ]
    good, bad = validate_uploads(uploads, LIMITS)
    assert [g.name for g in good] == ["ok.png"]
    import hashlib

    assert good[0].content_hash == hashlib.sha256(uploads[0].data).hexdigest()
    assert {b["file"]: b["reason"] for b in bad} == {
        "cut.jpg": "truncated",
        "text.png": "not_an_image",
        "bomb.png": "decompression_bomb",
        "big.png": "decompression_bomb",
        "scrambled.png": "corrupt",
        "icon.ico": "unsupported_format",
        "empty.png": "empty",
    }


def test_rejected_images_status_follows_the_reasons():
    bomb = {"file": "b.png", "reason": "decompression_bomb", "message": "m"}
    cut = {"file": "c.png", "reason": "truncated", "message": "m"}
    ico = {"file": "i.ico", "reason": "unsupported_format", "message": "m"}
    assert (rejected_images([bomb]).status, rejected_images([bomb]).code) == (413, "decompression_bomb")
    assert (rejected_images([ico]).status, rejected_images([ico]).code) == (415, "unsupported_format")
    mixed = rejected_images([bomb, cut])
    assert (mixed.status, mixed.code) == (422, "invalid_images")
    assert mixed.details["rejected"] == [bomb, cut] and "1 more" in mixed.message
    taken = {"file": "a.png", "reason": "indexed_elsewhere", "message": "m"}
    again = {"file": "a.png", "reason": "duplicate", "message": "m"}
    assert rejected_images([taken, again]).status == 409  # the second copy follows the first one's status


def test_api_error_survives_pickling_with_every_field():
    err = ApiError(409, "trained_generator", "no", counts={"trained": 3})
    back = pickle.loads(pickle.dumps(err))
    assert (back.status, back.code, back.message, back.details) == (
        409,
        "trained_generator",
        "no",
        {"counts": {"trained": 3}},
    )
    assert back.body()["error"]["code"] == "trained_generator"


@pytest.mark.parametrize(
    "name, canonical",
    [("my-gan", "my-gan"), ("SD1.4", "SD1.4"), ("sdv4", "SD1.4"), ("DALL-E 3", "DALL-E 3"), ("dots", "dots")],
)
def test_generator_names_are_checked_and_canonical(name, canonical):
    assert canonical_generator(name) == canonical


@pytest.mark.parametrize(
    "name, code",
    [
        ("real", "reserved_generator_name"),
        ("REAL", "reserved_generator_name"),
        ("nature", "reserved_generator_name"),
        ("0_real", "reserved_generator_name"),
        ("unknown", "reserved_generator_name"),
        ("", "invalid_generator_name"),
        ("-gan", "invalid_generator_name"),
        ("a" * 65, "invalid_generator_name"),
        ("bad/name", "invalid_generator_name"),
        ("x;rm -rf", "invalid_generator_name"),
        ("tab\tname", "invalid_generator_name"),
    ],
)
def test_bad_names_are_422_and_reserved_ones_409(name, code):
    with pytest.raises(ApiError) as info:
        canonical_generator(name)
    assert (info.value.status, info.value.code) == (409 if code == "reserved_generator_name" else 422, code)
    expected_hint = NAME_PATTERN.pattern if code == "invalid_generator_name" else "a label the service answers with"
    assert expected_hint in info.value.message


def test_api_key_comes_from_the_env_var_or_a_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHRAY_TEST_KEY", " from-env \n")
    assert resolve_api_key("SYNTHRAY_TEST_KEY") == "from-env"
    (tmp_path / "key").write_text("from-file\n")
    assert resolve_api_key("SYNTHRAY_TEST_KEY", str(tmp_path / "key")) == "from-file"
    monkeypatch.delenv("SYNTHRAY_TEST_KEY")
    assert resolve_api_key("SYNTHRAY_TEST_KEY") is None
    (tmp_path / "empty").write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        resolve_api_key("SYNTHRAY_TEST_KEY", str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="cannot be read"):
        resolve_api_key("SYNTHRAY_TEST_KEY", str(tmp_path / "missing"))


def test_key_check_guards_writes_always_and_reads_on_request():
    def code(check: KeyCheck, presented, write):
        try:
            check.check(presented, write)
        except ApiError as exc:
            return exc.status, exc.code
        return "ok"

    open_reads = KeyCheck("k", read_requires_key=False, env_var="X")
    assert code(open_reads, None, write=False) == "ok"
    assert code(open_reads, None, write=True) == (401, "missing_api_key")
    assert code(open_reads, "wrong", write=True) == (403, "invalid_api_key")
    assert code(open_reads, "k", write=True) == "ok"
    keyed = KeyCheck("k", read_requires_key=True, env_var="X")
    assert code(keyed, None, write=False) == (401, "missing_api_key")
    assert code(keyed, "k", write=False) == "ok"
    no_key = KeyCheck(None, read_requires_key=False, env_var="X")
    assert code(no_key, "anything", write=True) == (403, "writes_disabled")
    assert code(no_key, None, write=False) == "ok"
    with pytest.raises(ValueError, match="no API key"):
        KeyCheck(None, read_requires_key=True, env_var="X")


@pytest.mark.parametrize(
    "query, kinds, samples",
    [
        ({}, [], 150),
        ({"explain": "false"}, [], 150),
        ({"explain": "all"}, ["saliency", "lime"], 150),
        ({"explain": "true", "lime_samples": "40"}, ["saliency", "lime"], 40),
        ({"explain": " LIME, saliency,lime"}, ["lime", "saliency"], 150),
    ],
)
def test_explain_query_is_parsed_into_kinds_and_lime_views(query, kinds, samples):
    from serve.api import ExplainSettings, explain_request

    assert explain_request(query, ExplainSettings()) == (kinds, samples)


@pytest.mark.parametrize(
    "query, code",
    [
        ({"explain": "gradcam"}, "invalid_explain"),
        ({"explain": ","}, "invalid_explain"),
        ({"explain": "lime", "lime_samples": "9"}, "invalid_lime_samples"),
        ({"explain": "lime", "lime_samples": "1001"}, "invalid_lime_samples"),
        ({"explain": "lime", "lime_samples": "1e3"}, "invalid_lime_samples"),
    ],
)
def test_bad_explain_queries_are_422(query, code):
    from serve.api import ExplainSettings, explain_request

    with pytest.raises(ApiError) as info:
        explain_request(query, ExplainSettings())
    assert (info.value.status, info.value.code) == (422, code)
