"""Models: `get_model(name, num_classes=..., ...)` -> Classifier; `MODELS` lists names.

Importing the backbone modules registers them in MODELS.
"""
from jaxdapt.models.classifier import Classifier, FeatureBottleneck, MLPHead, feature_dim
from jaxdapt.models.zoo import MODELS, get_model
from jaxdapt.models import digits, resnet, vgg, vit  # noqa: F401  (registration)
from jaxdapt.models import digit_protocols  # noqa: F401  (registration)

__all__ = ["MODELS", "Classifier", "FeatureBottleneck", "MLPHead", "feature_dim", "get_model"]
