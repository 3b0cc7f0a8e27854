"""Caption metrics with the standard implementation (pycocoevalcap, the COCO caption
toolkit): PTB tokenization, BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr-D, and SPICE when its
Stanford CoreNLP jars are already installed (pycocoevalcap would download them).
The tokenizer, METEOR and SPICE run in Java."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tapkit.errors import UserError

METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr", "SPICE")
DEFAULT_METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr")
SPICE_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")


class CaptionMetricsError(UserError):
    """The caption metrics cannot run here."""


def require_pycocoevalcap() -> Path:
    """The installed pycocoevalcap package folder, or a one-line error."""
    try:
        from pycocoevalcap.tokenizer import ptbtokenizer
    except ImportError:
        raise CaptionMetricsError("caption metrics need pycocoevalcap: pip install 'tapkit-vision[eval]'") from None
    return Path(ptbtokenizer.__file__).parent.parent


def require_java() -> None:
    if shutil.which("java") is None:
        raise CaptionMetricsError(
            "Java is missing: pycocoevalcap runs the PTB tokenizer and METEOR in Java; install a JRE (e.g. apt-get install default-jre)"
        )


def spice_available() -> bool:
    """True when SPICE's CoreNLP jars are present (never downloads them)."""
    lib = require_pycocoevalcap() / "spice" / "lib"
    return all((lib / jar).is_file() for jar in SPICE_JARS)


def parse_metrics(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise CaptionMetricsError(f"unknown caption metric(s) {', '.join(unknown) or text!r}; choose from {', '.join(METRICS)}")
    return names


@dataclass
class CaptionScores:
    """Metric name -> score in percent (BLEU-1..4, METEOR, ROUGE-L, CIDEr, SPICE), and notes."""

    metrics: dict[str, float]
    notes: list[str] = field(default_factory=list)


def _scorers(names: tuple[str, ...]):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge

    factories = {"BLEU": Bleu, "METEOR": Meteor, "ROUGE-L": Rouge, "CIDEr": Cider}
    if "SPICE" in names:
        from pycocoevalcap.spice.spice import Spice

        factories["SPICE"] = Spice
    return [(name, factories[name]) for name in METRICS if name in names]


def score_captions(references: dict[str, list[str]], candidates: dict[str, str], names: tuple[str, ...] = DEFAULT_METRICS) -> CaptionScores:
    """Scores one candidate caption per key against its reference captions, exactly as
    pycocoevalcap does (same tokenizer, same scorers, keys in the given order)."""
    require_pycocoevalcap()
    require_java()
    if list(references) != list(candidates):
        raise ValueError("references and candidates must have the same keys in the same order")
    notes = []
    if "SPICE" in names and not spice_available():
        names = tuple(n for n in names if n != "SPICE")
        notes.append("SPICE skipped: its Stanford CoreNLP jars are not installed (see docs/evaluation.md)")
    if not candidates:
        raise CaptionMetricsError("no captions to score")
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in candidates.items()})
    metrics: dict[str, float] = {}
    for name, factory in _scorers(names):
        scorer = factory()
        if name == "BLEU":
            score, _ = scorer.compute_score(gts, res, verbose=0)
            metrics.update({f"BLEU-{i + 1}": 100.0 * float(s) for i, s in enumerate(score)})
        elif name == "SPICE":
            try:
                score, _ = scorer.compute_score(gts, res)
                metrics[name] = 100.0 * float(score)
            except (subprocess.CalledProcessError, OSError) as err:  # optional metric: keep the others
                notes.append(f"SPICE failed ({err}); the other metrics are unaffected")
        else:
            score, _ = scorer.compute_score(gts, res)
            metrics[name] = 100.0 * float(score)
        del scorer  # METEOR keeps a Java process until collected
    return CaptionScores(metrics, notes)
