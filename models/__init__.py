"""vitcube's neural-network architectures and their analytic cost model.

`ArchConfig` names a baseline (MobileViT v1/v2, ExMobileViT, MobileNet v1/v2/v3, EfficientViT),
`ArchConfig.scale(r=, d_i=, d_m=, w=)` gives a concrete `Arch` by the cube's rules (README.md,
"How it works"), `build_model` builds it in PyTorch, `count_macs` / `count_params` cost it by
arithmetic, `fuse` folds BatchNorm for inference.
"""

from vitcube.models.arch import FACTORS, Arch, ConvBlock, Stage, TransformerSpec, make_divisible
from vitcube.models.config import ArchConfig, register_preset
from vitcube.models.cost import count_macs, count_params
from vitcube.models.network import build_model, fuse

__all__ = [
    "FACTORS",
    "Arch",
    "ArchConfig",
    "ConvBlock",
    "Stage",
    "TransformerSpec",
    "build_model",
    "count_macs",
    "count_params",
    "fuse",
    "make_divisible",
    "register_preset",
]
