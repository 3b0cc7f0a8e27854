"""The server's open-vocabulary segmentation: POST /v1/images/{id}/segment equals the
segmenter on the uploaded image, 501 without a segmenter, one-line 422s, and the schema."""

import numpy as np
import pytest
from fastapi.testclient import TestClient

import tapkit
from tapkit.serve import ServeSettings, create_app
from tapkit.utils.rle import decode_rle

from san_helpers import tiny_san_folder
from serve_helpers import encode, shapes_image, upload


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    return tapkit.load_segmenter(tiny_san_folder(tmp_path_factory.mktemp("san")))


@pytest.fixture
def client(tiny_model, segmenter):
    with TestClient(create_app(tiny_model, ServeSettings(), everything=None, segmenter=segmenter)) as c:
        yield c


def test_segment_equals_the_segmenter(client, segmenter):
    rgb = shapes_image()
    image_id = upload(client, encode(rgb, "PNG")).json()["id"]
    classes = ["background", "red circle", "blue square"]
    answer = client.post(f"/v1/images/{image_id}/segment", json={"classes": classes})
    assert answer.status_code == 200, answer.text
    data = answer.json()
    expected = segmenter.segment(rgb, classes)
    assert data["image"] == {"id": image_id, "width": rgb.shape[1], "height": rgb.shape[0]}
    assert [c["name"] for c in data["classes"]] == classes
    for c in data["classes"]:
        assert np.array_equal(decode_rle(c["segmentation"]), expected.label_map == c["index"])
        assert c["area"] == expected.areas[c["index"]]
    assert client.get("/healthz").json()["model"]["segmenter"] is True


def test_segment_mistakes_are_one_line(client):
    image_id = upload(client, encode(shapes_image(), "PNG")).json()["id"]
    for body in ({"classes": []}, {"classes": ["a", "a"]}, {"classes": ["a", " "]}, {"names": ["a"]}):
        answer = client.post(f"/v1/images/{image_id}/segment", json=body)
        assert answer.status_code == 422 and "\n" not in answer.json()["detail"], (body, answer.text)
    assert client.post("/v1/images/nope/segment", json={"classes": ["a"]}).status_code == 404


def test_no_segmenter_answers_501(tiny_model):
    with TestClient(create_app(tiny_model, ServeSettings(), everything=None)) as c:
        image_id = upload(c, encode(shapes_image(), "PNG")).json()["id"]
        answer = c.post(f"/v1/images/{image_id}/segment", json={"classes": ["a"]})
        assert answer.status_code == 501 and "segmenter" in answer.json()["detail"]
        assert c.get("/healthz").json()["model"]["segmenter"] is False
        assert "/v1/images/{image_id}/segment" in c.get("/openapi.json").json()["paths"]
