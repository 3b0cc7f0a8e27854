import json
import subprocess
import sys
from pathlib import Path

import pytest

from tapkit.data.synth import caption_for, direction, generate_scene, nearest
from tapkit.training.caption_truth import CaptionFacts, caption_truth, judge, parse_caption
from tapkit.training.synth_eval import evaluate_world

ROOT = Path(__file__).resolve().parents[1]


def test_parse_caption_reads_subject_direction_and_related_shape():
    facts = parse_caption("a small striped red circle left of a blue star")
    assert facts == CaptionFacts("red", "circle", "left of", "blue", "star", "small", "striped") and facts.states_relation
    assert parse_caption("a large green square") == CaptionFacts("green", "square", size="large")
    assert not parse_caption("a large green square").states_relation
    # "right of" is not read as "left of"; the related shape's words are not the subject's.
    assert parse_caption("a star right of a red hexagon") == CaptionFacts(None, "star", "right of", "red", "hexagon")
    assert parse_caption("a black ellipse below") == CaptionFacts("black", "ellipse", "below", None, None)
    assert parse_caption(None) == CaptionFacts(None, None)


def test_judge_each_part_and_a_shorter_true_caption():
    truth = parse_caption("a small red circle left of a blue star")
    right = judge(parse_caption("a red circle left of a blue star"), truth)
    assert right.subject and right.related and right.direction and right.all_three and right.true
    wrong_way = judge(parse_caption("a red circle above a blue star"), truth)
    assert wrong_way.related and not wrong_way.direction and not wrong_way.true and not wrong_way.all_three
    wrong_neighbour = judge(parse_caption("a red circle left of a blue hexagon"), truth)
    assert wrong_neighbour.direction and not wrong_neighbour.related and not wrong_neighbour.true
    # Saying less is true but not complete; a wrong subject is never true.
    short = judge(parse_caption("a small red circle"), truth)
    assert short.true and short.subject and not short.all_three
    assert not judge(parse_caption("a small green circle"), truth).true
    # With no other shape in the scene, the complete caption states no relation.
    alone = parse_caption("a small red circle")
    assert judge(parse_caption("a red circle"), alone).all_three
    invented = judge(parse_caption("a red circle left of a blue star"), alone)
    assert invented.subject and not invented.true and not invented.all_three


def test_caption_truth_shares():
    refs = ["a red circle left of a blue star", "a blue star right of a red circle", "a green square"]
    said = ["a red circle left of a blue star", "a blue star", "a green square above a red circle"]
    t = caption_truth(said, refs)
    assert t.captions == 3 and t.subject == 1.0
    assert t.all_three == pytest.approx(1 / 3) and t.true == pytest.approx(2 / 3)
    assert t.related == pytest.approx(1 / 3) and t.direction == pytest.approx(1 / 3)
    assert t.states_relation == pytest.approx(2 / 3) and t.size is None and t.texture == 1.0
    t = caption_truth(["a small dotted red circle", "a large red circle", "a small striped red circle"],
                      ["a small dotted red circle", "a small red circle", "a small red circle"])
    assert t.size == pytest.approx(2 / 3) and t.texture == pytest.approx(2 / 3)
    assert caption_truth([], []) is None
    with pytest.raises(ValueError):
        caption_truth(["a"], ["a red circle", "a blue star"])


def test_world_captions_name_the_nearest_shape_and_subject_captions_leave_it_out():
    assert direction((0, 0), (10, 2)) == "left of" and direction((0, 9), (1, 0)) == "below"
    assert nearest((0, 0), [(5, 5), (1, 1), (1, 1)]) == 1
    for index in range(6):
        full, subject = generate_scene(3, index, 96), generate_scene(3, index, 96, captions="subject")
        short = generate_scene(3, index, 96, captions="short")
        assert [s.concept for s in full.shapes] == [s.concept for s in subject.shapes] == [s.concept for s in short.shapes]
        assert (full.image == subject.image).all() and (full.image == short.image).all()
        for a, b, c in zip(full.shapes, subject.shapes, short.shapes):
            assert c.caption == f"a {a.size} {a.colour} {a.shape}" and b.caption.startswith(f"a {a.size} ")
            others = [o for o in full.shapes if o is not a]
            facts, short = parse_caption(a.caption), parse_caption(b.caption)
            assert not short.states_relation and short.subject == (a.colour, a.shape)
            assert facts.states_relation == bool(others)
            if others:
                near = min(others, key=lambda o: (o.centre[0] - a.centre[0]) ** 2 + (o.centre[1] - a.centre[1]) ** 2)
                assert facts.related == (near.colour, near.shape)
                assert a.caption == caption_for(a, others)


def test_plain_drawings_captions_state_the_nearest_shape(tmp_path):
    out = tmp_path / "plain"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "plain_drawings.py"), "--out", str(out), "--images", "3",
                    "--separated"], check=True, capture_output=True)
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    assert records
    for record in records:
        anns = record["annotations"]
        assert 3 <= len(anns) <= 4
        for ann in anns:
            facts = parse_caption(ann["caption"])
            assert " ".join(facts.subject) == ann["concept"] and facts.states_relation
            assert " ".join(facts.related) in {a["concept"] for a in anns if a is not ann}


def test_evaluate_world_reports_whole_caption_truth(tiny_model, tiny_world):
    report = evaluate_world(tiny_model, tiny_world.sa1b, max_images=2, progress=False)
    for kind in (report.caption_truth_box, report.caption_truth_point):
        assert kind["captions"] == report.regions
        for key in ("subject", "related", "direction", "all_three", "true", "states_relation"):
            assert 0.0 <= kind[key] <= 1.0
        assert kind["all_three"] <= min(kind["subject"], kind["related"], kind["direction"])
        assert kind["all_three"] <= kind["true"] <= kind["subject"]
