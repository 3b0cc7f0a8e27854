"""A PAT checkpoint through the SAN family's front doors: load_segmenter, segment, and
`tapkit segment --tokens` (each level's code map and the reconstruction beside the image)."""

import numpy as np
import pytest
import torch
from PIL import Image

import tapkit
from tapkit.cli.main import main
from tapkit.models.san.pat import CodebookConfig, PatConfig, PyramidLevel
from tapkit.segmenter.outputs import tokens_image
from tapkit.utils.overlay import palette

from san_helpers import tiny_san_folder

PAT = PatConfig(levels=(PyramidLevel(1, 1), PyramidLevel(2, 2)), codebook=CodebookConfig(num_codes=8, dim=8), width=8,
                guidance_width=8, guidance_at=1, recon_factor=4)


@pytest.fixture(scope="module")
def pat(tmp_path_factory):
    return tiny_san_folder(tmp_path_factory.mktemp("pat"), pat=PAT)


@pytest.fixture(scope="module")
def san(tmp_path_factory):
    return tiny_san_folder(tmp_path_factory.mktemp("san"))


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def test_segmenter_loads_a_pat_and_gives_its_tokens(pat, image):
    seg = tapkit.load_segmenter(pat)
    assert seg.has_tokens and seg.model.cfg.pat == PAT
    result = seg.segment(str(image), ["red circle", "background"])
    assert result.label_map.shape == (40, 56)
    tokens = seg.tokens(str(image))
    # input: short side 64 -> 64 x 90, padded to 64 x 96; CLIP sees half: an 4 x 6 grid of patch 8
    # (a cell partly over the image is kept: ceil); level 2 pooled by 2; the picture 4x the finest grid, cropped
    assert [m.shape for m in tokens.code_maps] == [(4, 6), (2, 3)]
    assert all(((m >= 0) & (m < 8)).all() for m in tokens.code_maps) and tokens.num_codes == [8, 8]
    assert tokens.reconstruction.shape == (16, 23, 3) and tokens.reconstruction.dtype == np.uint8
    with torch.no_grad():
        x, _ = seg.preprocess(np.asarray(Image.open(image).convert("RGB")))
        direct = seg.model.tokenize(x)
    assert np.array_equal(tokens.code_maps[1], direct.indices[1][0, :2, :3].numpy())


def test_segment_tokens_picture(pat, image, tmp_path):
    out = tmp_path / "o"
    argv = ["segment", str(image), "--classes", "red circle,background", "--checkpoint", str(pat), "-o",
            str(out / "a.json"), "--tokens", str(out / "a.tokens.png"), "--device", "cpu"]
    assert main(argv) == 0
    picture = np.asarray(Image.open(out / "a.tokens.png").convert("RGB"))
    seg = tapkit.load_segmenter(pat)
    rgb = np.asarray(Image.open(image).convert("RGB"))
    assert np.array_equal(picture, np.asarray(tokens_image(rgb, seg.tokens(rgb))))
    # the first code-map panel (after the image, 256 tall, 358 wide, and a 6 px gap) shows palette colours only
    colours = {tuple(c) for c in palette(8)}
    panel = picture[:256, 358 + 6 : 358 + 6 + 40].reshape(-1, 3)
    assert {tuple(c) for c in panel} <= colours


def test_tokens_of_a_plain_san_is_one_line_and_writes_nothing(san, image, tmp_path, capsys):
    out = tmp_path / "o.json"
    argv = ["segment", str(image), "--classes", "a,b", "--checkpoint", str(san), "-o", str(out),
            "--tokens", str(tmp_path / "t.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--tokens needs a PAT checkpoint" in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "t.png").exists()


def test_folder_mode_writes_a_token_picture_per_image(pat, image, tmp_path):
    out = tmp_path / "out"
    assert main(["segment", "--input-dir", str(image.parent), "--classes", "a,b", "--checkpoint", str(pat), "-o",
                 str(out), "--tokens", "--no-progress"]) == 0
    assert (out / "a.png.tokens.png").is_file() and (out / "a.png.json").is_file()


def test_server_segments_with_a_pat(tiny_model, pat):
    from fastapi.testclient import TestClient

    from tapkit.serve import ServeSettings, create_app
    from tapkit.utils.rle import decode_rle

    from serve_helpers import encode, shapes_image, upload

    segmenter = tapkit.load_segmenter(pat)
    with TestClient(create_app(tiny_model, ServeSettings(), everything=None, segmenter=segmenter)) as client:
        rgb = shapes_image()
        image_id = upload(client, encode(rgb, "PNG")).json()["id"]
        classes = ["background", "red circle"]
        answer = client.post(f"/v1/images/{image_id}/segment", json={"classes": classes})
        assert answer.status_code == 200, answer.text
        expected = segmenter.segment(rgb, classes)
        for c in answer.json()["classes"]:
            assert np.array_equal(decode_rle(c["segmentation"]), expected.label_map == c["index"])
