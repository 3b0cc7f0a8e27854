"""SAN (Side Adapter Network, Xu et al., CVPR 2023): open-vocabulary semantic
segmentation on a frozen CLIP. A small side ViT with learnable queries, fed CLIP's
features, proposes masks and attention biases; the last CLIP blocks recognise each
proposal through its bias; class names become CLIP text embeddings."""

from tapkit.models.san.config import PRESETS, SanConfig, SideConfig
from tapkit.models.san.model import SanAuxOutput, SanModel, SanOutput

__all__ = ["PRESETS", "SanAuxOutput", "SanConfig", "SanModel", "SanOutput", "SideConfig"]
