"""tapkit: segment, recognize and caption any image region from a click, a box or a sketch."""

from tapkit.errors import UserError
from tapkit.loading import build_model, load_clip, load_model
from tapkit.predictor.predictor import ImageEmbedding, Predictor
from tapkit.inputs.prompts import Prompt
from tapkit.predictor.results import Region

__version__ = "0.1.0"

__all__ = ["ImageEmbedding", "Predictor", "Prompt", "Region", "UserError", "build_model", "load_clip", "load_model", "__version__"]
