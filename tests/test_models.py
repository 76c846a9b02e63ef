import numpy as np
import pytest
import torch
import torchvision

from inputiba.models.image import (
    Preprocess,
    class_index,
    default_layer,
    imagenet_class_names,
    load_model,
    model_fingerprint,
)


def test_torchvision_by_name_with_a_local_weights_file(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.resnet18(num_classes=7)
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, path)
    model, prep = load_model("resnet18", weights=path, num_classes=7)
    assert not model.training
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), ref.eval()(x))
    assert prep.mean == (0.485, 0.456, 0.406)


def test_weights_that_do_not_fit_and_missing_files(tmp_path):
    path = tmp_path / "w.pth"
    torch.save(torchvision.models.resnet18(num_classes=3).state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        load_model("resnet18", weights=path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("resnet18", weights=tmp_path / "nope.pth")


def test_unknown_names_suggest_close_ones():
    with pytest.raises(ValueError, match="resnet50"):
        load_model("resnet5O")
    with pytest.raises(ValueError, match="Cannot import"):
        load_model("no_such_module:factory")


def test_module_factory():
    model, _ = load_model("torchvision.models:resnet18")
    assert isinstance(model, torchvision.models.ResNet)


def test_class_names_and_targets():
    names = imagenet_class_names()
    assert len(names) == 1000 and names[285] == "Egyptian cat"
    assert class_index("espresso") == 967 and class_index("Egyptian Cat") == 285
    assert class_index(3, 10) == 3
    with pytest.raises(ValueError, match="out of range"):
        class_index(10, 10)
    with pytest.raises(ValueError, match="espresso"):
        class_index("expresso")
    assert default_layer("vgg16") == "features.17" and default_layer("efficientnet-lite0") == "_blocks.5"


def test_preprocess_resizes_whole_image_and_normalises():
    prep = Preprocess(32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    img = np.full((40, 60, 3), 255, np.uint8)
    t = prep(img)
    assert t.shape == (3, 32, 32) and torch.allclose(t, torch.ones_like(t))
    grey = np.zeros((10, 10), np.uint8)
    assert torch.allclose(prep(grey), -torch.ones(3, 32, 32))
    assert torch.allclose(prep.denormalize(t), torch.ones_like(t))


def test_preprocess_of_a_pil_image_does_not_warn():
    """PIL gives read-only arrays; torch warns when wrapping one without a copy."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = Preprocess(16)(Image.fromarray(np.zeros((20, 30, 3), np.uint8)))
    assert t.shape == (3, 16, 16)


def test_preprocess_antialias_switch_matches_a_plain_bilinear_resize():
    """antialias=False reproduces a plain bilinear resize (what cv2 and the original code do)."""
    import numpy as np
    import torch.nn.functional as F

    from inputiba.models.image import Preprocess

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)  # high frequencies: filters differ
    plain = Preprocess(32, mean=(0.0,) * 3, std=(1.0,) * 3, antialias=False)(img)
    t = torch.from_numpy(img).permute(2, 0, 1).float()[None] / 255
    torch.testing.assert_close(plain, F.interpolate(t, size=(32, 32), mode="bilinear",
                                                    align_corners=False)[0])
    smooth = Preprocess(32, mean=(0.0,) * 3, std=(1.0,) * 3)(img)
    assert smooth.std() < plain.std()  # the default low-pass filters the noise


def test_model_fingerprint_tells_weights_apart_not_copies():
    """Same architecture and values: one fingerprint (a copy, another dtype-identical load);
    one changed buffer or parameter, or a bf16 copy: another."""
    torch.manual_seed(0)
    a = torchvision.models.resnet18(num_classes=3).eval()
    b = torchvision.models.resnet18(num_classes=3).eval()
    b.load_state_dict(a.state_dict())
    fp = model_fingerprint(a)
    assert len(fp) == 16 and fp == model_fingerprint(b)
    with torch.no_grad():
        b.bn1.running_mean[0] += 1e-3
    assert model_fingerprint(b) != fp
    c = torchvision.models.resnet18(num_classes=3).eval()
    c.load_state_dict(a.state_dict())
    with torch.no_grad():
        c.fc.weight[0, 0] += 1e-6
    assert model_fingerprint(c) not in (fp, model_fingerprint(b))
    assert model_fingerprint(a.to(torch.bfloat16)) != fp  # numpy has no bf16: read as bytes
