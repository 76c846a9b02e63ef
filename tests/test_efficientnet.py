"""End to end on the packaged EfficientNet-Lite0 with a real photo that has an object box."""

import json

import numpy as np
import pytest
import torch

from inputiba import InputIBA, estimate_layer_statistics
from inputiba.data.assets import fetch_package_files, standin_estimation_images
from inputiba.models.image import imagenet_class_names, load_model


@pytest.fixture(scope="module")
def effnet():
    model, prep = load_model("efficientnet-lite0")
    images = standin_estimation_images(n=48, seed=0)
    batches = torch.split(prep.batch(images), 16)
    with pytest.warns(UserWarning, match="only 48 samples"):
        stats = estimate_layer_statistics(model, "_blocks.5", batches, progress=False)
    return model, prep, stats


def _quokka():
    from PIL import Image

    root = fetch_package_files("imgaug", "0.4.0")
    img = np.asarray(Image.open(root / "imgaug" / "quokka.jpg").convert("RGB"))
    box = json.loads((root / "imgaug" / "quokka_annotations.json").read_text())["bounding_boxes"][0]
    return img, (box["x1"], box["y1"], box["x2"], box["y2"])


def test_packaged_model_predicts_real_photos(effnet):
    model, prep, _ = effnet
    from inputiba.data.assets import builtin_photos

    photos = builtin_photos(["coffee", "chelsea"])
    with torch.no_grad():
        p = torch.softmax(model(prep.batch(list(photos.values()))), 1)
    names = imagenet_class_names()
    assert names[int(p[0].argmax())] == "espresso"
    assert int(p[1].argmax()) in (281, 282, 285)  # tabby, tiger cat, Egyptian cat


def test_map_mass_concentrates_in_the_object_box(effnet):
    model, prep, stats = effnet
    img, (x1, y1, x2, y2) = _quokka()
    h, w = img.shape[:2]
    x = prep.batch([img])
    ex = InputIBA(model, "_blocks.5", stats, preset="fast", gan_epochs=2, gan_dataset_size=64,
                  input_steps=15)
    res = ex.attribute(x, return_details=True)
    amap = res.attribution[0, 0]
    assert amap.shape == (224, 224) and amap.min() >= 0 and amap.max() <= 1
    # box in the 224 x 224 frame (the whole photo is resized, no crop)
    sx, sy = 224 / w, 224 / h
    box = torch.zeros(224, 224, dtype=torch.bool)
    box[int(y1 * sy):int(np.ceil(y2 * sy)), int(x1 * sx):int(np.ceil(x2 * sx))] = True
    area = box.float().mean().item()
    heat = (amap - amap.min()).clamp_min(0)
    inside = (heat[box].sum() / heat.sum()).item()
    assert inside > 1.5 * area, (inside, area)


def test_folded_efficientnet_is_the_same_function(effnet):
    """All 49 batch norms and 17 "same" paddings fold; values and input gradients agree."""
    from inputiba.core.fusion import fold_batchnorm
    from inputiba.core.layers import layer_output

    model, prep, _ = effnet
    from inputiba.data.assets import builtin_photos

    x = prep.batch(list(builtin_photos(["coffee", "chelsea"]).values()))
    fast, n = fold_batchnorm(model, x[:1], keep=("_blocks.5",))
    assert n == 49 + 17
    assert type(model._bn0).__name__ == "BatchNorm2d"  # the packaged model is untouched
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = model(xa), fast(xb)
    torch.testing.assert_close(yb, ya, rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(layer_output(fast, "_blocks.5", x),
                                   layer_output(model, "_blocks.5", x), rtol=1e-4, atol=1e-4)
    ya[:, 967].sum().backward()
    yb[:, 967].sum().backward()
    # float32 rounding moves a few pre-activations across a ReLU6 kink (the gradient of the
    # coffee photo changes by about 1% in mean; in float64 both agree to 1e-16): compare
    # directions per image
    cos = torch.nn.functional.cosine_similarity(xb.grad.flatten(1), xa.grad.flatten(1))
    assert (cos > 0.999).all(), cos
