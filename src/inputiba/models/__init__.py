"""Classifiers to explain: loading, preprocessing and class names (image models), the small
CIFAR-style CNN, and the packaged text models (:mod:`inputiba.models.text`)."""

from inputiba.models.image import (
    BUILTIN_MODELS,
    Preprocess,
    class_index,
    default_layer,
    imagenet_class_names,
    import_factory,
    load_model,
    load_weights,
    model_fingerprint,
)

__all__ = [
    "BUILTIN_MODELS",
    "Preprocess",
    "class_index",
    "default_layer",
    "imagenet_class_names",
    "import_factory",
    "load_model",
    "load_weights",
    "model_fingerprint",
]
