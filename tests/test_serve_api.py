"""The HTTP API through the test client: happy paths, every limit, every bad input."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from serve_helpers import encode, png_header_only, shapes_image, upload
from tapkit.predictor.predictor import Predictor
from tapkit.inputs.prompts import Prompt
from tapkit.serve import ServeSettings, create_app
from tapkit.utils.rle import decode_rle

PROMPTS = [
    {"points": [[40, 45, 1]]},
    {"points": [[80, 40, 1], [20, 10, 0]]},
    {"box": [60, 25, 95, 75]},
    {"box": [10, 10, 70, 80], "points": [[35, 48, 1]]},
    {"sketch": [[60, 30], [90, 70], [70, 72]]},
]


@pytest.fixture
def make_client(tiny_model):
    clients = []

    def make(everything=None, **settings) -> TestClient:
        client = TestClient(create_app(tiny_model, ServeSettings(**settings), everything=everything))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture
def image_id(client):
    response = upload(client, encode(shapes_image(), "PNG"))
    assert response.status_code == 201, response.text
    return response.json()["id"]


def direct_regions(model, rgb, prompts, top_k=5, captions=True):
    predictor = Predictor(model)
    predictor.set_image(rgb)
    return [r.to_json() for r in predictor.predict([Prompt.from_dict(p) for p in prompts], top_k=top_k, captions=captions)]


def assert_same_regions(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g["prompt"] == w["prompt"]
        assert g["concept"] == w["concept"] and g["caption"] == w["caption"]
        assert g["score"] == pytest.approx(w["score"], abs=1e-4)
        assert [c[0] for c in g["concepts"]] == [c[0] for c in w["concepts"]]
        agree = (decode_rle(g["mask"]) == decode_rle(w["mask"])).mean()
        assert agree > 0.999


# ---------- happy paths ----------


def test_healthz_reports_model_cache_and_limits(make_client, tiny_model):
    client = make_client(max_pixels=12345)
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["model"]["image_size"] == tiny_model.image_size
    assert body["model"]["concepts"] == len(tiny_model.concepts)
    assert body["model"]["captions"] is True and body["model"]["everything"] is False
    assert body["limits"]["max_pixels"] == 12345
    assert body["cache"]["images"] == 0


def test_upload_then_regions_equal_the_predictor(client, tiny_model):
    rgb = shapes_image()
    response = upload(client, encode(rgb, "PNG"))
    assert response.status_code == 201
    info = response.json()
    assert (info["width"], info["height"], info["format"]) == (144, 96, "PNG")
    assert client.get("/healthz").json()["cache"]["images"] == 1

    response = client.post(f"/v1/images/{info['id']}/regions", json={"prompts": PROMPTS, "top_k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["image"] == {"id": info["id"], "width": 144, "height": 96}
    assert_same_regions(body["regions"], direct_regions(tiny_model, rgb, PROMPTS, top_k=3))
    for region in body["regions"]:
        assert len(region["concepts"]) == 3
        assert region["mask"]["size"] == [96, 144]


def test_regions_options_top_k_zero_and_no_captions(client, image_id):
    body = client.post(f"/v1/images/{image_id}/regions", json={"prompts": PROMPTS[:1], "top_k": 0, "captions": False}).json()
    (region,) = body["regions"]
    assert region["concepts"] == [] and region["concept"] is None and region["caption"] is None


def test_prompts_file_objects_work_unchanged(client, image_id, tmp_path):
    """The CLI's PROMPTS.json objects are the API's prompts: two-number points default to foreground."""
    body = client.post(f"/v1/images/{image_id}/regions", json={"prompts": [{"points": [[40, 45]]}]}).json()
    assert body["regions"][0]["prompt"] == {"points": [[40.0, 45.0, 1]]}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_image_type_is_detected_by_content_not_name(client, fmt):
    data = encode(shapes_image(), fmt)
    response = upload(client, data, name="notes.txt", content_type="text/plain")
    assert response.status_code == 201, response.text
    assert response.json()["format"] == fmt


def test_gif_uses_its_first_frame(client):
    frames = [Image.fromarray(np.full((20, 30, 3), c, np.uint8)) for c in ((250, 0, 0), (0, 0, 250))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    response = upload(client, buffer.getvalue())
    assert response.status_code == 201
    assert (response.json()["width"], response.json()["height"]) == (30, 20)


def test_exif_orientation_is_applied(client):
    image = Image.fromarray(shapes_image(40, 60))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees when shown
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    info = upload(client, buffer.getvalue()).json()
    assert (info["width"], info["height"]) == (40, 60)


def test_get_and_delete_image(client, image_id):
    assert client.get(f"/v1/images/{image_id}").json()["width"] == 144
    assert client.delete(f"/v1/images/{image_id}").status_code == 204
    assert client.get(f"/v1/images/{image_id}").status_code == 404
    assert client.post(f"/v1/images/{image_id}/regions", json={"prompts": PROMPTS[:1]}).status_code == 404
    assert client.get("/healthz").json()["cache"]["bytes"] == 0


def test_cache_is_bounded_and_evicts_least_recently_used(make_client, tiny_model):
    probe = make_client()
    first = upload(probe, encode(shapes_image(), "PNG")).json()
    one = probe.get("/healthz").json()["cache"]["bytes"]
    assert one > 0
    client = make_client(cache_bytes=int(one * 2.5))
    ids = [upload(client, encode(shapes_image(), "PNG")).json()["id"] for _ in range(2)]
    client.get(f"/v1/images/{ids[0]}")  # touch the first: the second is now the oldest
    ids.append(upload(client, encode(shapes_image(), "PNG")).json()["id"])
    cache = client.get("/healthz").json()["cache"]
    assert cache["images"] == 2 and cache["evictions"] == 1 and cache["bytes"] <= cache["max_bytes"]
    assert client.get(f"/v1/images/{ids[1]}").status_code == 404
    assert client.get(f"/v1/images/{ids[0]}").status_code == 200
    assert client.get(f"/v1/images/{ids[2]}").status_code == 200
    assert first["id"] not in ids


def test_openapi_schema_documents_the_api(client):
    schema = client.get("/openapi.json").json()
    assert {"/healthz", "/v1/images", "/v1/images/{image_id}/regions", "/v1/images/{image_id}/everything"} <= set(schema["paths"])
    prompt = schema["components"]["schemas"]["PromptIn"]
    assert set(prompt["properties"]) == {"points", "box", "sketch"}
    assert "RegionOut" in schema["components"]["schemas"]


def test_page_and_static_files_are_served_with_safe_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "/static/style.css" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200


def test_everything_uses_the_automatic_mode_function(make_client, tiny_model):
    seen = {}

    def grid_everything(predictor, rgb):
        seen["shape"] = rgb.shape
        h, w = rgb.shape[:2]
        return predictor.predict([Prompt(points=[(w * fx, h * fy, 1)]) for fx in (0.25, 0.75) for fy in (0.25, 0.75)])

    client = make_client(everything=grid_everything)
    assert client.get("/healthz").json()["model"]["everything"] is True
    image_id = upload(client, encode(shapes_image(), "PNG")).json()["id"]
    response = client.post(f"/v1/images/{image_id}/everything")
    assert response.status_code == 200, response.text
    assert len(response.json()["regions"]) == 4
    assert seen["shape"] == (96, 144, 3)


def test_everything_runs_the_real_automatic_mode_on_the_cached_embedding(tiny_model, monkeypatch):
    from tapkit.everything import EverythingGenerator

    encodes = []
    original = EverythingGenerator._crop_candidates

    def spy(self, rgb, crop, index, timings, counts, embedding=None):
        encodes.append(embedding is None)
        return original(self, rgb, crop, index, timings, counts, embedding)

    monkeypatch.setattr(EverythingGenerator, "_crop_candidates", spy)
    with TestClient(create_app(tiny_model)) as client:
        assert client.get("/healthz").json()["model"]["everything"] is True
        image_id = upload(client, encode(shapes_image(), "PNG")).json()["id"]
        response = client.post(f"/v1/images/{image_id}/everything")
    assert response.status_code == 200, response.text
    regions = response.json()["regions"]
    assert encodes == [False]  # the cached embedding was reused, not recomputed
    for region in regions:
        (x, y, label), = region["prompt"]["points"]
        assert label == 1 and 0 <= x <= 144 and 0 <= y <= 96
        assert decode_rle(region["mask"]).shape == (96, 144)


def test_everything_is_501_when_turned_off(tiny_model):
    # automatic mode is imported directly (always installed); a server can still run without it
    with TestClient(create_app(tiny_model, everything=None)) as client:
        assert client.get("/healthz").json()["model"]["everything"] is False
        image_id = upload(client, encode(shapes_image(), "PNG")).json()["id"]
        response = client.post(f"/v1/images/{image_id}/everything")
    assert response.status_code == 501
    assert "tapkit.everything" in response.json()["detail"]


# ---------- concurrency ----------


def blocker():
    """A model-thread job that holds the model until released."""
    started, release = threading.Event(), threading.Event()

    def job():
        started.set()
        assert release.wait(20)

    return job, started, release


async def wait_for(condition, timeout=20.0):
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


def test_model_work_does_not_block_the_event_loop(tiny_model):
    app = create_app(tiny_model, everything=None)
    state = app.state.tapkit

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            job, started, release = blocker()
            hold = asyncio.create_task(state.worker.run(job))
            await wait_for(started.is_set)
            files = {"file": ("a.png", encode(shapes_image(), "PNG"), "image/png")}
            pending = asyncio.create_task(client.post("/v1/images", files=files))
            health = await asyncio.wait_for(client.get("/healthz"), timeout=10)
            assert health.status_code == 200
            assert not pending.done()  # the upload waits for the model, the loop does not
            release.set()
            assert (await pending).status_code == 201
            await hold

    try:
        asyncio.run(scenario())
    finally:
        state.worker.close()


def test_concurrent_regions_on_one_image_share_a_batch(tiny_model):
    app = create_app(tiny_model, ServeSettings(batch_window_ms=1), everything=None)
    state = app.state.tapkit
    rgb = shapes_image()

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            files = {"file": ("a.png", encode(rgb, "PNG"), "image/png")}
            image_id = (await client.post("/v1/images", files=files)).json()["id"]
            job, started, release = blocker()
            hold = asyncio.create_task(state.worker.run(job))
            await wait_for(started.is_set)
            requests = [
                asyncio.create_task(client.post(f"/v1/images/{image_id}/regions", json={"prompts": [p], "captions": False}))
                for p in PROMPTS
            ]
            await wait_for(lambda: state.batcher.pending_requests() == len(PROMPTS))
            release.set()
            await hold
            return [(await r).json()["regions"][0] for r in requests]

    try:
        regions = asyncio.run(scenario())
    finally:
        state.worker.close()
    stats = state.batcher.stats()
    assert (stats.batches, stats.requests) == (1, len(PROMPTS))
    assert_same_regions(regions, direct_regions(tiny_model, rgb, PROMPTS, captions=False))


def test_different_options_are_not_mixed_in_a_batch(tiny_model):
    app = create_app(tiny_model, ServeSettings(batch_window_ms=50), everything=None)
    state = app.state.tapkit

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            files = {"file": ("a.png", encode(shapes_image(), "PNG"), "image/png")}
            image_id = (await client.post("/v1/images", files=files)).json()["id"]
            url = f"/v1/images/{image_id}/regions"
            with_caption, without = await asyncio.gather(
                client.post(url, json={"prompts": PROMPTS[:1]}),
                client.post(url, json={"prompts": PROMPTS[:1], "captions": False, "top_k": 1}),
            )
            return with_caption.json()["regions"][0], without.json()["regions"][0]

    try:
        a, b = asyncio.run(scenario())
    finally:
        state.worker.close()
    assert a["caption"] is not None and len(a["concepts"]) == 5
    assert b["caption"] is None and len(b["concepts"]) == 1
    assert state.batcher.stats().batches == 2


# ---------- limits ----------


def test_upload_larger_than_the_limit_is_413(make_client):
    client = make_client(max_upload_bytes=4000)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode(noise, "PNG")
    assert len(data) > 4000
    response = upload(client, data)
    assert response.status_code == 413 and "limit is 4000" in response.json()["detail"]


def test_body_far_over_the_limit_is_refused_before_reading(make_client):
    client = make_client(max_upload_bytes=4000)
    response = upload(client, b"\xff\xd8\xff" + b"0" * 200_000)
    assert response.status_code == 413


def test_streamed_body_without_length_is_cut_at_the_limit(make_client, image_id):
    client = make_client(max_json_bytes=1000)

    def chunks():
        yield b'{"prompts": ['
        for _ in range(200):
            yield b'{"points": [[1, 1, 1]]},'
        yield b'{"points": [[1, 1, 1]]}]}'

    response = client.post(f"/v1/images/{image_id}/regions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "exceeds 1000 bytes" in response.json()["detail"]


def test_json_body_over_the_limit_is_413(make_client):
    client = make_client(max_json_bytes=500)
    image_id = upload(client, encode(shapes_image(), "PNG")).json()["id"]
    body = {"prompts": [{"sketch": [[i % 100, i % 90] for i in range(200)]}]}
    assert client.post(f"/v1/images/{image_id}/regions", json=body).status_code == 413


def test_too_many_pixels_is_413(make_client):
    client = make_client(max_pixels=100 * 100)
    response = upload(client, encode(shapes_image(101, 100), "PNG"))
    assert response.status_code == 413 and "10100 pixels" in response.json()["detail"]
    assert upload(client, encode(shapes_image(100, 100), "PNG")).status_code == 201


@pytest.mark.parametrize("side", [7000, 100_000])
def test_decompression_bombs_are_refused_from_the_header(client, side):
    data = png_header_only(side, side)
    assert len(data) < 200
    response = upload(client, data)
    assert response.status_code == 413
    assert "pixels" in response.json()["detail"]


@pytest.mark.parametrize(
    "data, status, words",
    [
        (b"", 422, "empty"),
        (b"hello, this is text", 415, "not a supported image"),
        (b"%PDF-1.7\n" + b"0" * 100, 415, "not a supported image"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", 415, "not a supported image"),
        (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, 422, "cannot decode the PNG image"),
    ],
)
def test_bad_uploads(client, data, status, words):
    response = upload(client, data)
    assert response.status_code == status
    assert words in response.json()["detail"]


def test_truncated_jpeg_is_422(client):
    data = encode(shapes_image(), "JPEG")
    response = upload(client, data[: len(data) // 2])
    assert response.status_code == 422 and "cannot decode the JPEG image" in response.json()["detail"]


def test_upload_without_a_file_field_is_422(client):
    response = client.post("/v1/images", data={"other": "x"})
    assert response.status_code == 422 and "file" in response.json()["detail"]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"prompts": [{"points": [[500, 40, 1]]}]}, "prompt 0: point (500, 40) lies outside the 144x96 image"),
        ({"prompts": [PROMPTS[0], {"points": [[10, -1, 1]]}]}, "prompt 1: point (10, -1) lies outside"),
        ({"prompts": [{"box": [10, 10, 200, 50]}]}, "box corner (200, 50) lies outside"),
        ({"prompts": [{"box": [50, 10, 10, 50]}]}, "x1 <= x2"),
        ({"prompts": [{"box": [1, 2, 3]}]}, "a box is [x1, y1, x2, y2]"),
        ({"prompts": [{"points": [[1, 2, 7]]}]}, "point labels are 1 (foreground) or 0 (background)"),
        ({"prompts": [{"points": [[1, 2, 1, 4]]}]}, "a point is [x, y] or [x, y, label]"),
        ({"prompts": [{"sketch": [[1000, 1000], [1001, 1001]]}]}, "sketch point"),
        ({"prompts": [{}]}, "empty prompt"),
        ({"prompts": [{"points": [["a", 2, 1]]}]}, "body.prompts[0].points[0][0]"),
        ({"prompts": [{"click": [1, 2]}]}, "body.prompts[0].click: Extra inputs are not permitted"),
        ({"prompts": []}, "body.prompts"),
        ({"prompts": {"points": [[1, 2]]}}, "body.prompts"),
        ({}, "body.prompts: Field required"),
        ({"prompts": [PROMPTS[0]], "top_k": 21}, "top_k is 21; the limit is 20"),
        ({"prompts": [PROMPTS[0]], "top_k": -1}, "body.top_k"),
        ({"prompts": [PROMPTS[0]], "colour": "red"}, "body.colour"),
        ({"prompts": [{"points": [[1, 1, 1]] * 65}]}, "body.prompts[0].points"),
    ],
)
def test_malformed_prompts_are_422_with_a_clear_message(client, image_id, body, words):
    response = client.post(f"/v1/images/{image_id}/regions", json=body)
    assert response.status_code == 422
    assert words in response.json()["detail"]


@pytest.mark.parametrize(
    "raw, words",
    [
        (b'{"prompts": [', "invalid JSON"),
        (b'{"prompts": [{"points": [[NaN, 2, 1]]}]}', "finite number"),
        (b"[1, 2]", "body"),
    ],
)
def test_unparsable_bodies_are_422(client, image_id, raw, words):
    response = client.post(f"/v1/images/{image_id}/regions", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert words in response.json()["detail"]


def test_too_many_prompts_is_422(make_client):
    client = make_client(max_prompts=3)
    image_id = upload(client, encode(shapes_image(), "PNG")).json()["id"]
    response = client.post(f"/v1/images/{image_id}/regions", json={"prompts": PROMPTS[:4]})
    assert response.status_code == 422 and "4 prompts; the limit is 3" in response.json()["detail"]


@pytest.mark.parametrize(
    "method, path",
    [
        ("post", "/v1/images/{}/regions"),
        ("post", "/v1/images/{}/everything"),
        ("get", "/v1/images/{}"),
        ("delete", "/v1/images/{}"),
    ],
)
def test_unknown_image_ids_are_404(client, method, path):
    kwargs = {"json": {"prompts": PROMPTS[:1]}} if path.endswith("regions") else {}
    response = getattr(client, method)(path.format("no-such-image"), **kwargs)
    assert response.status_code == 404
    assert "unknown image id 'no-such-image'" in response.json()["detail"]


def test_model_errors_are_500_without_internals(client, image_id, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail at /home/me/model.pkl")

    monkeypatch.setattr(Predictor, "predict", broken)
    with caplog.at_level(logging.ERROR, logger="tapkit.serve"):
        response = client.post(f"/v1/images/{image_id}/regions", json={"prompts": PROMPTS[:1]})
    assert response.status_code == 500
    assert "secret" not in response.text and "model.pkl" not in response.text and "RuntimeError" not in response.text
    assert response.json()["detail"].startswith("internal error")
    assert "secret detail" in caplog.text  # the operator still gets the traceback
    assert client.get("/healthz").status_code == 200  # and the server keeps serving


def test_encoder_errors_on_upload_are_500(client, monkeypatch):
    monkeypatch.setattr(Predictor, "embed_image", lambda self, image: 1 / 0)
    response = upload(client, encode(shapes_image(), "PNG"))
    assert response.status_code == 500 and "Zero" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/static//etc/passwd",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
    ],
)
def test_no_path_outside_the_static_folder_is_served(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "root:" not in response.text and "create_app" not in response.text


# ---------- other sites ----------


def test_cross_origin_writes_are_refused(client, image_id):
    files = {"file": ("a.png", encode(shapes_image(), "PNG"), "image/png")}
    response = client.post("/v1/images", files=files, headers={"origin": "http://evil.example"})
    assert response.status_code == 403 and "cross-origin" in response.json()["detail"]
    response = client.post(f"/v1/images/{image_id}/regions", json={"prompts": PROMPTS[:1]}, headers={"origin": "http://evil.example"})
    assert response.status_code == 403
    same = client.post(f"/v1/images/{image_id}/regions", json={"prompts": PROMPTS[:1]}, headers={"origin": "http://testserver"})
    assert same.status_code == 200
    assert client.get("/healthz", headers={"origin": "http://evil.example"}).status_code == 200


def test_allowed_hosts_stop_dns_rebinding(make_client):
    client = make_client(allowed_hosts=("127.0.0.1", "localhost"))
    assert client.get("/healthz").status_code == 400  # the test client's host is 'testserver'
    assert client.get("/healthz", headers={"host": "localhost:8000"}).status_code == 200
    assert client.get("/", headers={"host": "127.0.0.1:8000"}).status_code == 200
    response = client.get("/", headers={"host": "rebind.evil.example:8000"})
    assert response.status_code == 400 and "not served here" in response.json()["detail"]
