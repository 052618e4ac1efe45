"""Models of the paper's comparison: ViT (with the Table 8 position-embedding variants), BiT ResNets, hybrids.

One entry point, found by name (timm style)::

    model = create_model("ViT-micro/4", num_classes=10, img_size=16, pos_embed="learned_2d", pool="gap")

Every model has ``forward`` (logits), ``forward_features`` (pre-logit representation, B x num_features),
``reset_classifier(num_classes)`` (zero-initialised fine-tuning head), ``set_img_size(img_size)`` and the
attributes ``num_classes``, ``num_features``, ``img_size``, ``family``, ``model_name``; ViT and hybrid
models also have ``forward_attention(x)`` (softmax attention maps per layer).
"""

# Importing the family modules registers them; the order is the order of list_models().
from vitbench.models import vit  # noqa: F401  isort: skip
from vitbench.models import bit, hybrid  # noqa: F401  isort: skip
from vitbench.models.bit import BiT
from vitbench.models.flops import count_flops, count_params
from vitbench.models.hybrid import HybridViT
from vitbench.models.pos_embed import PLACEMENTS, POS_EMBEDS
from vitbench.models.registry import (VIT_DEFAULTS, config_kwargs, create_model, from_config, list_models, model_defaults, model_family,
                                      patch_size, validate_model_kwargs)
from vitbench.models.vit import POOLS, VisionTransformer

__all__ = [
    "BiT", "HybridViT", "PLACEMENTS", "POOLS", "POS_EMBEDS", "VIT_DEFAULTS", "VisionTransformer", "count_flops", "count_params",
    "config_kwargs", "create_model", "from_config", "list_models", "model_defaults", "model_family", "patch_size",
    "validate_model_kwargs",
]
