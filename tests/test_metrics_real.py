"""The metrics on the packaged EfficientNet-Lite0 and a real photo: they rank real maps above noise."""

from __future__ import annotations

import pytest
import torch

from inputiba.data.datasets import load_localization_set
from inputiba.metrics import functional as MF

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bus(one_thread):
    from captum.attr import LayerAttribution, LayerGradCam

    from inputiba.models.image import load_model

    model, preprocess = load_model("efficientnet-lite0")
    sample = next(s for s in load_localization_set(("labelme",)) if s.name == "2011_000025")
    x = preprocess(sample.image).unsqueeze(0)
    keep, probs = MF.filter_by_probability(model, x, [779])
    assert keep.item(), probs  # a school bus, confidently
    cam = LayerGradCam(model, model._conv_head).attribute(x, target=779, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam, (224, 224), interpolate_mode="bilinear")[:, 0].detach()
    noise = torch.rand(1, 224, 224, generator=torch.Generator().manual_seed(0))
    return model, x, sample, cam / cam.max(), noise


def test_deletion_insertion_rank_gradcam_above_noise(bus):
    model, x, _, cam, noise = bus
    kw = {"step": 0.05, "batch_size": 21}
    assert (
        MF.deletion(model, x, [779], cam, **kw).auc < MF.deletion(model, x, [779], noise, **kw).auc
    )
    assert (
        MF.insertion(model, x, [779], cam, **kw).auc
        > MF.insertion(model, x, [779], noise, **kw).auc
    )


def test_localisation_ranks_gradcam_above_noise(bus):
    from inputiba.core.functional import resize_map

    _, _, sample, cam, noise = bus
    h, w = sample.image.shape[:2]
    boxes = sample.boxes_for(779)
    big = resize_map(cam[None], (h, w))[0, 0].clamp(0, 1).numpy()
    rnd = resize_map(noise[None], (h, w))[0, 0].numpy()
    assert MF.mass_in_box(big, boxes)[0] > MF.mass_in_box(rnd, boxes)[0]
    assert MF.effective_heat_ratio(big, boxes) > MF.effective_heat_ratio(rnd, boxes)
