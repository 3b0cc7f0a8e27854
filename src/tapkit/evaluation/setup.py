"""What every benchmark run needs: its inputs, where it writes, and how the model is named."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tapkit.evaluation.report import file_summary
from tapkit.models.interface import PromptableModel


@dataclass(frozen=True)
class EvalSetup:
    """gt: COCO-style annotation file; images_dir: its images; output_dir: report,
    predictions and the resumable shard files; limit: only the first N images;
    fresh: discard saved predictions; max_batch: prompts decoded together."""

    gt: Path
    images_dir: Path | None
    output_dir: Path
    limit: int | None = None
    fresh: bool = False
    max_batch: int = 256

    @property
    def shard_dir(self) -> Path:
        return self.output_dir / "shards"

    @property
    def report_path(self) -> Path:
        return self.output_dir / "report.json"

    def data_key(self) -> dict:
        return {"gt": file_summary(self.gt), "images_dir": str(Path(self.images_dir).resolve())}


def describe_model(model: PromptableModel, checkpoint, tokenizer=None, concepts=None) -> dict:
    """The model's files and architecture, for reports and for telling runs apart (any
    family: an SCA is described by its backbone's encoder)."""
    enc = model.encoder_config
    return {
        "family": model.family,
        "checkpoint": file_summary(checkpoint),
        "tokenizer": file_summary(tokenizer),
        "concepts": file_summary(concepts),
        "image_encoder": {"depth": enc.depth, "embed_dim": enc.embed_dim, "image_size": enc.image_size},
        "text_decoder": model.text_decoder is not None,
        "dtype": str(model.dtype).replace("torch.", ""),
    }
