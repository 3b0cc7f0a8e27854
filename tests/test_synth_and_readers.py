import json

import numpy as np
import pytest

from tapkit.data.coco import read_coco
from tapkit.data.records import SkipCounter, load_rgb
from tapkit.data.sa1b import read_sa1b
from tapkit.data.synth import COLOURS, SHAPES, concept_names, generate_scene, write_world
from tapkit.data.vg import read_vg
from tapkit.errors import UserError


def test_scene_is_deterministic_per_seed_and_index():
    a, b, c = generate_scene(5, 2, 64), generate_scene(5, 2, 64), generate_scene(6, 2, 64)
    assert np.array_equal(a.image, b.image)
    assert [s.caption for s in a.shapes] == [s.caption for s in b.shapes]
    assert not np.array_equal(a.image, c.image)


def test_scene_masks_are_disjoint_visible_parts_and_captions_follow_the_grammar():
    for index in range(20):
        scene = generate_scene(0, index, 96)
        total = np.zeros((96, 96), int)
        for shape in scene.shapes:
            assert shape.mask.any()
            total += shape.mask
            assert shape.shape in SHAPES and shape.colour in COLOURS
            words = shape.caption.split()
            assert words[0] == "a" and shape.colour in words and shape.shape in words
            assert shape.size in ("small", "medium", "large") and words[1] == shape.size
        assert total.max() <= 1  # occlusion leaves each pixel to one shape


def test_world_covers_all_shapes_and_colours():
    seen = {(s.colour, s.shape) for i in range(60) for s in generate_scene(1, i, 64).shapes}
    assert {c for c, _ in seen} == set(COLOURS) and {s for _, s in seen} == set(SHAPES)
    assert len(concept_names()) == len(COLOURS) * len(SHAPES)


def test_readers_agree_on_the_written_world(tiny_world):
    sa1b = read_sa1b(tiny_world.sa1b)
    vg = read_vg(tiny_world.vg, tiny_world.sa1b)
    coco = read_coco(tiny_world.coco, tiny_world.sa1b)
    assert len(sa1b) == 6
    by_id = {r.image_id: r for r in sa1b}
    for record in vg:
        src = by_id[record.image_id]
        assert record.path == src.path
        assert [r.caption for r in record.regions] == [r.caption for r in src.regions]
        assert [r.bbox for r in record.regions] == [r.bbox for r in src.regions]
    for record in coco:
        src = by_id[record.image_id]
        for got, want in zip(record.regions, src.regions):
            assert got.concept == want.concept
            assert np.array_equal(got.mask(record.height, record.width), want.mask(src.height, src.width))


def test_sa1b_mask_bbox_and_area_are_consistent(tiny_world):
    for record in read_sa1b(tiny_world.sa1b):
        for region in record.regions:
            mask = region.mask(record.height, record.width)
            ys, xs = np.nonzero(mask)
            assert region.bbox == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_coco_polygons_and_lvis_coco_url(tmp_path):
    data = {
        "images": [{"id": 7, "coco_url": "http://x/000007.jpg", "width": 20, "height": 10}],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [2, 2, 4, 4], "category_id": 3, "segmentation": [[2, 2, 6, 2, 6, 6, 2, 6]], "iscrowd": 0},
            {"id": 2, "image_id": 7, "bbox": [0, 0, 1, 1], "category_id": 3, "segmentation": {"size": [10, 20], "counts": [0, 1, 199]}, "iscrowd": 1},
        ],
        "categories": [{"id": 3, "name": "cat"}],
    }
    path = tmp_path / "lvis.json"
    path.write_text(json.dumps(data))
    (record,) = read_coco(path, tmp_path)
    assert record.path == tmp_path / "000007.jpg"
    assert [r.id for r in record.regions] == [1]  # crowd skipped
    mask = record.regions[0].mask(10, 20)
    assert mask[3:6, 3:6].all() and not mask[0].any() and record.regions[0].concept == "cat"


def test_missing_and_corrupt_images_are_counted_not_fatal(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg at all")
    skips = SkipCounter()
    assert load_rgb(tmp_path / "bad.jpg", skips) is None
    assert load_rgb(tmp_path / "gone.jpg", skips) is None
    assert (skips.corrupt, skips.missing, skips.total) == (1, 1, 2)


def test_training_batches_skip_unreadable_images(tiny_world, tmp_path):
    import shutil

    from tapkit.data.semantic import SemanticTargets
    from tapkit.training.data import SegmentBatches

    copy = tmp_path / "sa1b"
    shutil.copytree(tiny_world.sa1b, copy)
    jpgs = sorted(copy.glob("*.jpg"))
    jpgs[0].write_bytes(b"\xff\xd8 truncated")
    jpgs[1].unlink()
    batches = SegmentBatches(read_sa1b(copy), 64, 2, 0, 0, 1, 3, SemanticTargets.load(tiny_world.semantic), 48)
    for step in range(4):
        batch = batches[step]
        assert batch.images.shape == (2, 64, 64, 3)
    assert batches.skips.corrupt >= 1 and batches.skips.missing >= 1


def test_malformed_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        read_sa1b(tmp_path / "nope")
    (tmp_path / "x.json").write_text("{bad json")
    with pytest.raises(UserError):
        read_vg(tmp_path / "x.json", tmp_path)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "sa_1.json").write_text('{"image": {}}')
    with pytest.raises(UserError):
        read_sa1b(tmp_path / "d")


def test_write_world_formats(tmp_path):
    summary = write_world(tmp_path / "w", 3, seed=0, size=48, progress=False)
    sa = json.loads((tmp_path / "w" / "sa1b" / "sa_0000000.json").read_text())
    assert set(sa) == {"image", "annotations"} and sa["image"]["file_name"] == "sa_0000000.jpg"
    ann = sa["annotations"][0]
    assert isinstance(ann["segmentation"]["counts"], str) and ann["segmentation"]["size"] == [48, 48]
    vg = json.loads((tmp_path / "w" / "vg_regions.json").read_text())
    assert len(vg["annotations"]) == summary.regions and all("caption" in a for a in vg["annotations"])
    assert (tmp_path / "w" / "concepts.txt").read_text().split("\n")[0] == "red circle"
