"""Every hyper-parameter of InputIBA in one typed settings object, and the named presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, fields
from typing import Any

from inputiba.errors import ConfigError, UnknownSettingError

#: How an ensemble's maps can be combined (the setting ``ensemble_reduce``;
#: :func:`inputiba.core.functional.reduce_members`).
ENSEMBLE_REDUCTIONS = ("mean", "median", "min")

#: Stage 3's learning-rate schedules (the setting ``input_lr_schedule``).
LR_SCHEDULES = ("constant", "cosine", "warmup")

__all__ = [
    "InputIBAConfig",
    "BottleneckSettings",
    "GanSettings",
    "PRESETS",
    "DEFAULT_PRESET",
    "DEFAULT_TEXT_PRESET",
    "resolve_config",
    "validate_settings",
    "check_setting",
    "SETTING_RULES",
]


@dataclass(frozen=True)
class BottleneckSettings:
    """The optimisation of one bottleneck (stage 1 on a layer, stage 3 on the input).

    Attributes:
        beta: weight of the information loss (mean KL in nats per element).
        steps: Adam steps.
        lr: Adam's learning rate.
        draws: noise draws per sample and step (the loss is their mean).
        sigma: Gaussian smoothing of lambda, in cells of the bottleneck's grid (0: off;
            only 2-d grids, images and feature maps, are smoothed).
        init_alpha: the initial logits (lambda = sigmoid(5) ~ 0.993: almost everything passes).
        average: 0: the result is the last iterate; N > 0: lambda (and its KL) is the mean of
            the last N iterates' lambdas (Polyak averaging: the last Adam steps at lr 1.0 jitter
            by about a logit, which averaging removes at no extra network pass).
        schedule: Adam's learning rate over the steps: ``"constant"`` (the original),
            ``"cosine"`` (from ``lr`` down to 0 along a half cosine) or ``"warmup"`` (ramped up
            linearly over the first sixth of the steps, then ``lr``).
    """

    beta: float = 20.0
    steps: int = 10
    lr: float = 1.0
    draws: int = 10
    sigma: float = 0.0
    init_alpha: float = 5.0
    average: int = 0
    schedule: str = "constant"


@dataclass(frozen=True)
class GanSettings:
    """Stage 2's Wasserstein GAN (weight clipping, RMSprop), as one group.

    Attributes:
        real: the critic's "real" samples at the layer: ``"capacity"`` (the stage-1 KL as the
            weight of R, noise of random sub-set means and stds; the original code) or
            ``"lambda"`` (the paper's bottleneck variable Z*).
        epochs: passes over the ``dataset_size`` real samples, in batches of ``batch_size``.
        dataset_size: number of real samples.
        subset_size: samples that share one noise mean and std (``"capacity"``).
        batch_size: samples per critic and generator step.
        critic: the image critic's convolution widths: ``"capped"`` (at most 256, 512, 128;
            the default, see docs/method.md) or ``"original"`` (2C, 4C, C for a layer of C
            channels, as the 2021 code; far larger for wide layers).
        critic_lr: the critic's learning rate.
        clip: the critic's weight clipping bound.
        critic_iters: critic steps per generator step.
        lr_mean: learning rate of the generator's noise mean.
        lr_scale: learning rate of the generator's noise scale.
        lr_theta: learning rate of the generator's mask logits.
        theta_init: the generator's initial mask logits: ``"capacity"`` (the stage-1 capacity in
            bits per pixel, as the original code: the mask starts at sigmoid(<= 0.1) ~ 0.5
            everywhere) or ``"normalized"`` (the capacity divided by its per-image maximum,
            clamped to [0.05, 0.95], as the mask: logits -2.9 to 2.9, so the mask starts
            shaped like the stage-1 map).
    """

    real: str = "capacity"
    critic: str = "capped"
    epochs: int = 20
    dataset_size: int = 200
    subset_size: int = 20
    batch_size: int = 32
    critic_lr: float = 5e-5
    clip: float = 0.01
    critic_iters: int = 5
    lr_mean: float = 0.1
    lr_scale: float = 0.05
    lr_theta: float = 0.003
    theta_init: str = "capacity"


@dataclass
class InputIBAConfig:
    """InputIBA's settings; the defaults are the original VGG16/ImageNet configuration.

    Stage 1 (feature bottleneck): ``feat_beta``, ``feat_steps``, ``feat_lr`` (Adam),
    ``feat_draws`` (noise draws per step), ``feat_sigma`` (smoothing of lambda in feature
    cells; the original InputIBA code turns it off), ``init_alpha``, ``min_std`` (floor of the
    layer std), ``active_threshold`` (elements non-zero in at most this fraction of the
    estimation samples are inactive).

    Stage 2 (WGAN): ``gan_real`` ("capacity": real samples weighted by the stage-1 KL as the
    original code; "lambda": the paper's bottleneck Z*), ``gan_critic`` ("capped" image critic
    widths, or "original"), ``gan_epochs``, ``gan_dataset_size``,
    ``gan_subset_size``, ``gan_batch_size``, ``gan_critic_lr``, ``gan_clip``,
    ``gan_critic_iters`` (critic steps per generator step), ``gan_lr_mean``, ``gan_lr_scale``,
    ``gan_lr_theta`` (RMSprop learning rates of the generator's parameters), ``gan_theta_init``
    ("capacity": the generator's mask starts at the stage-1 capacity in bits as the original
    code, about 0.5 everywhere; "normalized": at the per-image normalised capacity).

    Stage 3 (input bottleneck): ``input_beta``, ``input_steps``, ``input_lr``, ``input_draws``,
    ``input_sigma`` (smoothing of lambda in pixels), ``input_mean``, ``input_std`` (the noise
    distribution in normalised input space).

    ``input_average``: stage 3's map is the mean lambda of its last N steps (0: the last step).
    ``input_lr_schedule``: stage 3's learning rate over its steps, "constant" (the original),
    "cosine" (annealed to 0) or "warmup" (ramped up over the first sixth of the steps); neither
    changes how much maps agree across seeds (the project's results).
    ``seed``: per-sample random streams are seeded with ``seed + index`` unless seeds are given.
    ``ensemble``: K >= 1: every map combines K maps with independent seeds, run as one
    batch of K times the samples (about K times the work; averages out the optimisation's noise).
    ``ensemble_reduce``: how: "mean", "median" or "min" (pixel by pixel: high only where every
    run is; :func:`~inputiba.core.functional.reduce_members`). The intermediate maps of
    ``return_details`` are always the members' means.
    ``ensemble_shared_stage1``: the K runs of a sample share one stage-1 run (the first
    member's, with its seed) instead of each fitting its own; stages 2 and 3 stay independent.
    Stage-1 maps agree closely across seeds, so this saves K - 1 stage-1 runs per sample for
    little change; member 0's map is then the same as without sharing.
    ``max_batch``: at most this many images (samples x draws) per forward pass, which bounds
    memory; results do not depend on it (gradients are accumulated exactly). None: no limit.
    ``channels_last``: run 4-d inputs and convolution weights in channels-last memory layout
    during attribution (faster on CPUs; the weights' values never change and their layout is
    restored afterwards).
    ``fold_batchnorm``: run the stages on a private copy of the model in which eval-mode batch
    norms are folded into the convolutions before them (the same function up to float
    rounding, about 1.5x faster on CPUs for BatchNorm networks; the model is not modified).
    ``precision``: the network passes of image models run in ``"fp32"``, or under autocast
    in ``"bf16"`` or ``"fp16"`` (float16 passes scale their gradients against underflow);
    what is optimised (alpha, the GAN's generators and critics) and every loss stay float32
    (:mod:`inputiba.core.precision`). On CPUs without bfloat16 arithmetic, bf16 is slower.
    ``compile``: compile the image models' network passes with ``torch.compile`` (each chunk
    size compiles on first use; the compiled network is kept across ``attribute`` calls while
    the model's weights are unchanged; slower on the 2-core CPU measured, see the README's
    speed section). Text explainers warn that these two settings do not apply to them.
    ``keep_freed_memory``: on CPU, tell glibc to keep freed memory for reuse rather than
    return it to the OS (:func:`inputiba.core.memory.keep_freed_memory`; process-wide, once):
    fresh memory costs page faults, which took as long as the convolutions.
    """

    feat_beta: float = 20.0
    feat_steps: int = 10
    feat_lr: float = 1.0
    feat_draws: int = 10
    feat_sigma: float = 0.0
    init_alpha: float = 5.0
    min_std: float = 0.01
    active_threshold: float = 0.01

    gan_real: str = "capacity"
    gan_critic: str = "capped"
    gan_epochs: int = 20
    gan_dataset_size: int = 200
    gan_subset_size: int = 20
    gan_batch_size: int = 32
    gan_critic_lr: float = 5e-5
    gan_clip: float = 0.01
    gan_critic_iters: int = 5
    gan_lr_mean: float = 0.1
    gan_lr_scale: float = 0.05
    gan_lr_theta: float = 0.003
    gan_theta_init: str = "capacity"

    input_beta: float = 20.0
    input_steps: int = 60
    input_lr: float = 1.0
    input_draws: int = 10
    input_sigma: float = 1.0
    input_mean: float = 0.0
    input_std: float = 1.0
    input_average: int = 0
    input_lr_schedule: str = "constant"

    seed: int = 0
    ensemble: int = 1
    ensemble_reduce: str = "mean"
    ensemble_shared_stage1: bool = False
    max_batch: int | None = 8
    channels_last: bool = True
    fold_batchnorm: bool = True
    keep_freed_memory: bool = True
    precision: str = "fp32"
    compile: bool = False

    def __post_init__(self) -> None:
        validate_settings(self)

    def replace(self, **changes: Any) -> InputIBAConfig:
        """A copy with ``changes`` applied (unknown names raise a TypeError naming them; bad
        values a :class:`~inputiba.errors.ConfigError` naming the valid range)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def feature(self) -> BottleneckSettings:
        """Stage 1's settings (``feat_*`` and ``init_alpha``)."""
        return BottleneckSettings(self.feat_beta, self.feat_steps, self.feat_lr,
                                  self.feat_draws, self.feat_sigma, self.init_alpha)

    @property
    def input(self) -> BottleneckSettings:
        """Stage 3's settings (``input_*`` and ``init_alpha``)."""
        return BottleneckSettings(self.input_beta, self.input_steps, self.input_lr,
                                  self.input_draws, self.input_sigma, self.init_alpha,
                                  self.input_average, self.input_lr_schedule)

    @property
    def gan(self) -> GanSettings:
        """Stage 2's settings (the ``gan_*`` fields)."""
        return GanSettings(**{f.name: getattr(self, f"gan_{f.name}")
                              for f in fields(GanSettings)})


_FAST: dict[str, Any] = {
    "feat_draws": 5,
    "gan_epochs": 2,
    "gan_dataset_size": 64,
    "gan_subset_size": 16,
    "input_steps": 20,
    "input_draws": 4,
}

#: Named presets: overrides of the defaults.
#: ``paper``: the original settings (docs/method.md). ``fast``: for interactive use on a CPU,
#: fewer steps and draws everywhere (about 15x less work per image than ``paper``).
#: ``fast-nogan``: ``fast`` without stage 2 (``gan_epochs=0``): stage 3's prior is the GAN's
#: initial mask, which ``fast``'s two generator steps barely move (the README's "What each
#: stage buys": the same scores as ``fast`` within their intervals, in about 2/3 of the time).
#: ``stable``: the paper's stage 1, no stage 2, stage 3's prior the stage-1 capacity
#: normalised per image (``gan_theta_init="normalized"``), 30 stage-3 steps, each map the
#: mean of 3 seeds' maps (``ensemble``): maps that change less with the seed, more mass in
#: the object's box and a better insertion AUC than ``paper`` at 0.43x its time, at a worse
#: deletion AUC (the README's "What each stage buys").
#: ``consensus`` (the default for images): as ``stable`` with 11 stage-3 steps and 11 runs
#: that share one stage-1 run (``ensemble_shared_stage1``), each map the pixel-wise minimum of
#: the 11 (``ensemble_reduce="min"``: high only where every run keeps the pixel): deletion AUC
#: as ``paper``'s, better insertion AUC and mass in the object's box, maps that change much
#: less with the seed (0.85 against 0.55), at about 0.49x ``paper``'s time (the same README
#: section; it was 4 runs of 20 steps until 2026-12-07, then 7 separate runs of 12 steps).
PRESETS: dict[str, dict[str, Any]] = {
    "paper": {},
    "fast": dict(_FAST),
    "fast-nogan": {**_FAST, "gan_epochs": 0},
    "stable": {"gan_epochs": 0, "gan_theta_init": "normalized", "input_steps": 30,
               "ensemble": 3},
    "consensus": {"gan_epochs": 0, "gan_theta_init": "normalized", "input_steps": 11,
                  "ensemble": 11, "ensemble_reduce": "min", "ensemble_shared_stage1": True},
}

#: The preset every image entry point uses when none is named: the ``InputIBA`` class, the
#: workflows, run configuration files and the command line (the README's "What each stage
#: buys" measures why; until 2026-12-07 it was ``fast``).
DEFAULT_PRESET = "consensus"

#: The preset of :class:`~inputiba.modalities.text.TextInputIBA` when none is named
#: (on the two text models ``consensus`` has a worse deletion AUC than ``fast`` at ten times its
#: time: ``benchmarks/text_lexicon_hits.py``); ``inputiba explain-text`` uses it too (until
#: 2026-12-07 it defaulted to ``paper``).
DEFAULT_TEXT_PRESET = "fast"


def _check_names(changes: dict[str, Any]) -> None:
    names = {f.name for f in fields(InputIBAConfig)}
    unknown = sorted(set(changes) - names)
    if unknown:
        import difflib

        hints = []
        for u in unknown:
            close = difflib.get_close_matches(u, names, n=1)
            hints.append(f"{u!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UnknownSettingError(f"Unknown InputIBA setting(s): {', '.join(hints)}")


def resolve_config(
    preset: str | InputIBAConfig | None = None, **overrides: Any
) -> InputIBAConfig:
    """The settings for a preset name (None: :data:`DEFAULT_PRESET`), or a config, with
    ``overrides`` applied.

    Raises:
        ValueError: unknown preset. TypeError: unknown setting name.
    """
    if isinstance(preset, InputIBAConfig):
        base = preset
    else:
        name = preset or DEFAULT_PRESET
        if name not in PRESETS:
            raise ConfigError(f"Unknown preset {name!r}; choose from {', '.join(PRESETS)}")
        base = InputIBAConfig().replace(**PRESETS[name])
    return base.replace(**overrides)


#: The valid values of every setting: (type, lower bound, lower bound included, upper bound,
#: upper bound included); ``str`` settings list their choices instead of bounds. ``None`` is
#: valid only for ``max_batch`` (no limit).
SETTING_RULES: dict[str, tuple[Any, ...]] = {
    "feat_beta": (float, 0, True, None, False),
    "feat_steps": (int, 1, True, None, False),
    "feat_lr": (float, 0, False, None, False),
    "feat_draws": (int, 1, True, None, False),
    "feat_sigma": (float, 0, True, None, False),
    "init_alpha": (float, None, False, None, False),
    "min_std": (float, 0, False, None, False),
    "active_threshold": (float, 0, True, 1, False),
    "gan_real": (str, ("capacity", "lambda")),
    "gan_critic": (str, ("capped", "original")),
    "gan_theta_init": (str, ("capacity", "normalized")),
    "gan_epochs": (int, 0, True, None, False),
    "gan_dataset_size": (int, 1, True, None, False),
    "gan_subset_size": (int, 1, True, None, False),
    "gan_batch_size": (int, 1, True, None, False),
    "gan_critic_lr": (float, 0, False, None, False),
    "gan_clip": (float, 0, False, None, False),
    "gan_critic_iters": (int, 1, True, None, False),
    "gan_lr_mean": (float, 0, True, None, False),
    "gan_lr_scale": (float, 0, True, None, False),
    "gan_lr_theta": (float, 0, True, None, False),
    "input_beta": (float, 0, True, None, False),
    "input_steps": (int, 1, True, None, False),
    "input_lr": (float, 0, False, None, False),
    "input_draws": (int, 1, True, None, False),
    "input_sigma": (float, 0, True, None, False),
    "input_mean": (float, None, False, None, False),
    "input_std": (float, 0, False, None, False),
    "input_average": (int, 0, True, None, False),
    "input_lr_schedule": (str, LR_SCHEDULES),
    "seed": (int, 0, True, 2**63 - 1, True),
    "ensemble": (int, 1, True, None, False),
    "ensemble_reduce": (str, ENSEMBLE_REDUCTIONS),
    "ensemble_shared_stage1": (bool,),
    "max_batch": (int, 1, True, None, False),
    "channels_last": (bool,),
    "fold_batchnorm": (bool,),
    "keep_freed_memory": (bool,),
    "precision": (str, ("fp32", "bf16", "fp16")),
    "compile": (bool,),
}


def _range(lo: Any, lo_in: bool, hi: Any, hi_in: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>=' if lo_in else '>'} {lo}")
    if hi is not None:
        parts.append(f"{'<=' if hi_in else '<'} {hi}")
    return " and ".join(parts) or "finite"


def check_setting(name: str, value: Any) -> Any:
    """``value`` of setting ``name`` checked (and an int given for a float made a float).

    Raises:
        ConfigError: a value of the wrong type or out of the setting's range (the message
            gives the valid range).
    """
    rule = SETTING_RULES[name]
    kind = rule[0]
    if value is None and name == "max_batch":
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"InputIBA setting {name} must be true or false, got {value!r}")
        return value
    if kind is str:
        if value not in rule[1]:
            raise ConfigError(f"InputIBA setting {name} must be one of {', '.join(rule[1])}, "
                              f"got {value!r}")
        return value
    lo, lo_in, hi, hi_in = rule[1:]
    what = "an integer" if kind is int else "a number"
    valid = f"{what} {_range(lo, lo_in, hi, hi_in)}" + (" or null (no limit)"
                                                         if name == "max_batch" else "")
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and number and not isinstance(value, int) and float(value).is_integer():
        value = int(value)
    if not number or (kind is int and not isinstance(value, int)) or not math.isfinite(value):
        raise ConfigError(f"InputIBA setting {name} must be {valid}, got {value!r}")
    if (lo is not None and (value < lo or (value == lo and not lo_in))) or \
            (hi is not None and (value > hi or (value == hi and not hi_in))):
        raise ConfigError(f"InputIBA setting {name} must be {valid}, got {value!r}")
    return float(value) if kind is float else value


def validate_settings(cfg: InputIBAConfig) -> None:
    """Check every setting's type and range (the one place that does, for the Python API,
    the command line's ``--set`` and run configuration files).

    Raises:
        ConfigError: the first bad setting, with its valid range.
    """
    for f in fields(cfg):
        if f.name in SETTING_RULES:
            object.__setattr__(cfg, f.name, check_setting(f.name, getattr(cfg, f.name)))
    if cfg.gan_subset_size > cfg.gan_dataset_size:
        raise ConfigError(f"InputIBA setting gan_subset_size ({cfg.gan_subset_size}) must be at "
                          f"most gan_dataset_size ({cfg.gan_dataset_size})")
