"""End to end on the packaged EfficientNet-Lite0 with a real photo that has an object box."""

import json

import numpy as np
import pytest
import torch

from inputiba import InputIBA, estimate_layer_statistics
from inputiba.assets import fetch_package_files, standin_estimation_images
from inputiba.models import imagenet_class_names, load_model


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
    from inputiba.assets import builtin_photos

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
