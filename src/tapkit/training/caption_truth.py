"""Whole-caption truth on the synthetic world's grammar: does a caption say the right
subject (colour and shape), the right related shape (the nearest other shape by centre,
as the world defines it) and the right direction to it?

    a small striped red circle | left of | a blue star
    subject                      direction  related shape

The truth is the reference caption of the same grammar (the synthetic world's, or
scripts/plain_drawings.py's). A caption that states no relation claims nothing about
the neighbourhood: it can be true without being complete. Size and texture words are
scored apart (`size` where the references state sizes; `texture`, no texture word
meaning solid) and are not part of `true`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from tapkit.data.synth import COLOURS, RELATIONS, SHAPES, SIZES, TEXTURES
from tapkit.training.cider import tokenize

_RELATION_WORDS = {tuple(r.split()): r for r in RELATIONS}


@dataclass(frozen=True)
class CaptionFacts:
    """What a caption states: its subject's colour and shape, and (if it states one)
    the direction and the related shape's colour and shape. None: not stated."""

    colour: str | None
    shape: str | None
    direction: str | None = None
    related_colour: str | None = None
    related_shape: str | None = None
    size: str | None = None
    texture: str | None = None  # None: solid (the grammar says nothing)

    @property
    def subject(self) -> tuple[str | None, str | None]:
        return self.colour, self.shape

    @property
    def related(self) -> tuple[str | None, str | None]:
        return self.related_colour, self.related_shape

    @property
    def states_relation(self) -> bool:
        return self.direction is not None or self.related != (None, None)


def _first(words: list[str], vocabulary) -> str | None:
    return next((w for w in words if w in vocabulary), None)


def parse_caption(caption: str | None) -> CaptionFacts:
    """The facts a caption of the grammar states; words outside it are ignored.
    'a small red circle left of a blue star' -> red, circle, 'left of', blue, star."""
    words = tokenize(caption or "")
    for i in range(len(words)):
        for phrase, name in _RELATION_WORDS.items():
            if tuple(words[i : i + len(phrase)]) == phrase:
                before, after = words[:i], words[i + len(phrase) :]
                return CaptionFacts(_first(before, COLOURS), _first(before, SHAPES), name,
                                    _first(after, COLOURS), _first(after, SHAPES),
                                    _first(before, SIZES), _first(before, TEXTURES))
    return CaptionFacts(_first(words, COLOURS), _first(words, SHAPES), size=_first(words, SIZES),
                        texture=_first(words, TEXTURES))


@dataclass(frozen=True)
class CaptionJudgement:
    """One caption against its truth. subject / related / direction: that part is
    right (a caption without a relation has related and direction right only where the
    region has no other shape); all_three: all of them; true: every fact it states is
    right (the subject, and the relation if it states one)."""

    subject: bool
    related: bool
    direction: bool
    states_relation: bool

    @property
    def all_three(self) -> bool:
        return self.subject and self.related and self.direction

    @property
    def true(self) -> bool:
        return self.subject and (not self.states_relation or (self.related and self.direction))


def judge(said: CaptionFacts, truth: CaptionFacts) -> CaptionJudgement:
    return CaptionJudgement(
        subject=said.subject == truth.subject and None not in said.subject,
        related=said.related == truth.related,
        direction=said.direction == truth.direction,
        states_relation=said.states_relation,
    )


@dataclass
class CaptionTruth:
    """Shares of captions (0-1) with each part right, all three right, every stated
    fact true, and stating a relation at all; size: the size word right, among captions
    whose reference states a size (None if none do); texture: the texture word right
    (none said = solid)."""

    captions: int
    subject: float
    related: float
    direction: float
    all_three: float
    true: float
    states_relation: float
    size: float | None = None
    texture: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def caption_truth(captions: list[str | None], references: list[str]) -> CaptionTruth | None:
    """Judges each caption against the reference caption of its region (None if there are none)."""
    if not references:
        return None
    pairs = [(parse_caption(c), parse_caption(r)) for c, r in zip(captions, references, strict=True)]
    judged = [judge(said, truth) for said, truth in pairs]
    sized = [(said, truth) for said, truth in pairs if truth.size is not None]

    def share(values) -> float:
        values = list(values)
        return sum(values) / len(values)

    return CaptionTruth(
        captions=len(judged),
        subject=share(j.subject for j in judged),
        related=share(j.related for j in judged),
        direction=share(j.direction for j in judged),
        all_three=share(j.all_three for j in judged),
        true=share(j.true for j in judged),
        states_relation=share(j.states_relation for j in judged),
        size=share(s.size == t.size for s, t in sized) if sized else None,
        texture=share(s.texture == t.texture for s, t in pairs),
    )
