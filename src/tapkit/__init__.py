"""tapkit: segment, recognize and caption any image region from a click, a box or a sketch."""

from tapkit.errors import UserError
from tapkit.loading import build_model, load_clip, load_model
from tapkit.predictor.predictor import ImageEmbedding, Predictor
from tapkit.inputs.prompts import Prompt
from tapkit.predictor.results import Region
from tapkit.segmenter import Segmentation, Segmenter, load_segmenter

__version__ = "0.1.0"

__all__ = ["ImageEmbedding", "Predictor", "Prompt", "Region", "Segmentation", "Segmenter", "UserError", "build_model", "load_clip", "load_model", "load_segmenter", "__version__"]
