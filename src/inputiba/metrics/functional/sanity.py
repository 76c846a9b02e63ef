"""Model-randomisation sanity check (Adebayo et al., 2018)."""


from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from inputiba.core.layers import frozen_eval, get_layer
from inputiba.errors import ConfigError, InputError
from inputiba.metrics.functional._common import (
    _check_inputs,
    _targets,
)
from inputiba.metrics.functional.localization import _map2d

# ----------------------------------------------------------------------------- sanity check


def randomization_layers(model: nn.Module, depth: int | None = None) -> list[str]:
    """Names of the modules the cascading randomisation walks, top (output) layer first.

    Args:
        model: the classifier.
        depth: ``None``: every module holding parameters or normalisation statistics of its own
            (convs, linears, normalisation layers, embeddings, recurrent layers). An ``int``:
            group by blocks instead, i.e. modules whose dotted name has at most ``depth`` dots;
            one at exactly ``depth`` dots counts with everything inside it (for
            EfficientNet-Lite0, ``depth=1`` gives ``_fc, _bn1, _conv_head, _blocks.15, ...,
            _blocks.0, _bn0, _conv_stem``: 21 steps instead of 99).

    Returns:
        Names in reverse definition order (``named_modules`` order is the definition order,
        which for sequential-style models is the forward order).
    """

    def holds(mod: nn.Module, recurse: bool) -> bool:
        own = list(mod.parameters(recurse=recurse))
        own += [b for b in mod.buffers(recurse=recurse) if b.is_floating_point()]
        return bool(own)

    names = []
    for name, mod in model.named_modules():
        if not name:
            continue
        dots = name.count(".")
        if depth is not None and dots > depth:
            continue
        if holds(mod, recurse=depth is not None and dots == depth):
            names.append(name)
    return names[::-1]


def reinitialize_(module: nn.Module) -> None:
    """Re-initialise one module in place as the paper's sanity check does.

    Convolutions: Xavier (uniform) weights; linear layers: weights ~ N(0, 0.05); biases 0;
    BatchNorm and other normalisation layers: ``reset_parameters`` (weight 1, bias 0 and running
    mean 0 / variance 1: the original code's mistake 5 was to leave them); anything else with
    ``reset_parameters`` uses it. Submodules are re-initialised too.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.05)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._NormBase):
            m.reset_parameters()  # running stats and affine
        elif hasattr(m, "reset_parameters") and list(m.parameters(recurse=False)):
            m.reset_parameters()


def map_similarity(
    original: np.ndarray | torch.Tensor, other: np.ndarray | torch.Tensor, win_size: int = 5
) -> tuple[float, float]:
    """SSIM (window ``win_size``) and Spearman rank correlation between two maps.

    Both maps are min-max normalised to [0, 1] first (a constant map becomes zeros); SSIM uses
    ``data_range=1`` (scikit-image). Spearman is NaN when a map is constant.
    """
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    def norm(m: np.ndarray) -> np.ndarray:
        lo, hi = m.min(), m.max()
        return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)

    a, b = _map2d(original), _map2d(other)
    if a.shape != b.shape:
        raise InputError(f"maps of different shapes {a.shape} and {b.shape}")
    if min(a.shape) < win_size:
        raise ConfigError(f"SSIM window {win_size} is larger than the map {a.shape}")
    ssim = float(structural_similarity(norm(a), norm(b), win_size=win_size, data_range=1.0))
    if a.std() == 0 or b.std() == 0:
        rho = float("nan")
    else:
        rho = float(spearmanr(a.ravel(), b.ravel())[0])
    return ssim, rho


@dataclass
class SanityCheckResult:
    """Cascading model-parameter randomisation.

    Attributes:
        layers: the layers randomised, in order (step ``i`` has layers ``0..i`` randomised).
        ssim: ``(B, L)`` SSIM between each original map and the map after step ``i``.
        spearman: ``(B, L)`` Spearman rank correlation, likewise.
        original: ``(B, H, W)`` the maps of the unchanged model.
        maps: the ``(B, H, W)`` maps after each step (kept only with ``keep_maps``).
    """

    layers: list[str]
    ssim: np.ndarray
    spearman: np.ndarray
    original: np.ndarray
    maps: list[np.ndarray] = field(default_factory=list)


def _explain(explain_fn, model, inputs, targets) -> np.ndarray:
    out = explain_fn(model, inputs, targets)
    arr = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)
    arr = arr.astype(np.float64)
    if arr.ndim == 4:
        arr = arr.mean(1)
    if arr.ndim != 3 or arr.shape[0] != inputs.shape[0]:
        raise InputError(
            f"explain_fn must return (B, H, W) or (B, C, H, W) maps for {inputs.shape[0]} inputs, "
            f"got shape {arr.shape}"
        )
    return arr


def sanity_check(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor | Sequence[int] | int,
    explain_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor | np.ndarray],
    layers: Sequence[str] | None = None,
    reinit: Callable[[nn.Module], None] = reinitialize_,
    seed: int = 0,
    win_size: int = 5,
    keep_maps: bool = False,
    progress: bool = False,
) -> SanityCheckResult:
    """Cascading model-parameter randomisation test (Adebayo et al., 2018), top layer first.

    A deep copy of ``model`` is randomised layer after layer (``reinit`` on each, cumulative);
    after each step ``explain_fn`` runs again on the copy and its maps are compared with the
    original ones (:func:`map_similarity`: SSIM with window 5 and Spearman). The user's model is
    never modified. ``explain_fn`` must derive everything from the model it is given (for
    InputIBA: estimate the layer statistics and train the GAN on the randomised copy; reusing
    the original model's, mistake 5 of the original code, hides randomisation).

    Args:
        model: the classifier (not modified).
        inputs: ``(B, C, H, W)``; targets: ``(B,)``.
        explain_fn: ``explain_fn(model, inputs, targets) -> (B, H, W)`` maps (Quantus' signature).
        layers: module names to randomise, in order (each step randomises that module and its
            submodules); default :func:`randomization_layers` (every layer, top down; pass
            ``randomization_layers(model, depth=1)`` to randomise block by block).
        reinit: in-place re-initialisation of one module (default :func:`reinitialize_`).
        seed: seeds torch's RNG for the re-initialisations (the global RNG state is restored).
        win_size: SSIM window.
        keep_maps: keep the maps of each step.

    Returns:
        :class:`SanityCheckResult`.
    """
    from tqdm.auto import tqdm

    _check_inputs(inputs)
    t = _targets(targets, inputs.shape[0], inputs.device)
    with frozen_eval(model):
        original = _explain(explain_fn, model, inputs, t)
    rmodel = copy.deepcopy(model)
    names = list(layers) if layers is not None else randomization_layers(rmodel)
    for n in names:
        get_layer(rmodel, n)  # precise error for a wrong name
    ssim = np.zeros((len(original), len(names)))
    rho = np.zeros_like(ssim)
    maps = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for j, name in enumerate(
            tqdm(names, desc="randomising", disable=not progress, leave=False)
        ):
            with torch.no_grad():
                reinit(get_layer(rmodel, name))
            with frozen_eval(rmodel):
                new = _explain(explain_fn, rmodel, inputs, t)
            for i in range(len(original)):
                ssim[i, j], rho[i, j] = map_similarity(original[i], new[i], win_size)
            if keep_maps:
                maps.append(new)
    return SanityCheckResult(names, ssim, rho, original, maps)
