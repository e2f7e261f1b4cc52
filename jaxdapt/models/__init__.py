"""Models: `get_model(name, num_classes=..., ...)` -> Classifier; `MODELS` lists names.

Importing the backbone modules registers them in MODELS.
"""

from jaxdapt.models import (  # noqa: F401  (registration)
  digit_protocols,  # noqa: F401  (registration)
  digits,
  resnet,
  text_encoder,
  vgg,
  vit,
)
from jaxdapt.models.classifier import Classifier, FeatureBottleneck, MLPHead, feature_dim
from jaxdapt.models.zoo import MODELS, get_model

__all__ = ["MODELS", "Classifier", "FeatureBottleneck", "MLPHead", "feature_dim", "get_model"]
