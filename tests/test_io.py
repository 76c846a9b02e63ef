"""Image reading (modes, EXIF, broken files), input collection and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from inputiba.data.assets import builtin_photos
from inputiba.data.io import (
    ImageReadError,
    as_rgb_array,
    atomic_write,
    collect_images,
    read_image,
    save_json,
    save_npy,
)


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return builtin_photos(["chelsea"])["chelsea"]


@pytest.mark.parametrize(
    ("mode", "suffix", "max_err"),
    [
        ("RGB", ".png", 0),
        ("RGB", ".bmp", 0),
        ("RGB", ".tiff", 0),
        ("RGB", ".webp", 8),  # lossy: bound on the mean absolute error (0-255)
        ("RGB", ".jpg", 8),
        ("L", ".png", None),
        ("P", ".png", 20),  # 256-colour web palette
        ("CMYK", ".jpg", 8),
        ("CMYK", ".tiff", 1),
    ],
)
def test_read_image_modes(tmp_path, chelsea, mode, suffix, max_err):
    path = tmp_path / f"img{suffix}"
    Image.fromarray(chelsea).convert(mode).save(path)
    out = read_image(path)
    assert out.shape == chelsea.shape and out.dtype == np.uint8
    if max_err is None:  # grey: all channels equal the luminance
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
        grey = np.asarray(Image.fromarray(chelsea).convert("L"))
        assert np.abs(out[..., 0].astype(int) - grey).max() == 0
    else:
        err = np.abs(out.astype(int) - chelsea.astype(int)).mean()
        assert err <= max_err, (mode, suffix, err)


def test_alpha_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 5, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:2, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    out = read_image(tmp_path / "a.png")
    assert (out[:2] == [200, 0, 0]).all()
    assert (out[2:] == 255).all()
    out = read_image(tmp_path / "la.png")
    assert (out[:2] == 200).all() and (out[2:] == 255).all()


def test_sixteen_bit_grey(tmp_path):
    ramp = np.linspace(0, 65535, 64, dtype=np.uint16).reshape(8, 8)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    out = read_image(tmp_path / "g16.png")
    assert out.dtype == np.uint8 and out.shape == (8, 8, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert (np.diff(out[..., 0].reshape(-1).astype(int)) >= 0).all()


def test_exif_orientation_is_applied(tmp_path, chelsea):
    img = Image.fromarray(chelsea)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "rot.jpg")
    h, w = chelsea.shape[:2]
    assert out.shape == (w, h, 3)
    expect = np.rot90(chelsea, k=-1)
    assert np.abs(out.astype(int) - expect.astype(int)).mean() < 10


def test_broken_files_name_the_culprit(tmp_path, chelsea):
    Image.fromarray(chelsea).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.bmp").write_bytes(b"")
    for name, words in [("truncated.jpg", "corrupt"), ("text.png", "not a readable image"),
                        ("empty.bmp", "not a readable image"), ("missing.png", "no such file")]:
        with pytest.raises(ImageReadError) as info:
            read_image(tmp_path / name)
        msg = str(info.value)
        assert name in msg and words in msg and "\n" not in msg


def test_collect_images(tmp_path, chelsea):
    (tmp_path / "a").mkdir()
    (tmp_path / "empty").mkdir()
    for name in ("x.jpg", "y.PNG", ".hidden.png", "notes.txt"):
        Image.fromarray(chelsea[:8, :8]).save(tmp_path / "a" / name, format="PNG") \
            if name != "notes.txt" else (tmp_path / "a" / name).write_text("hi")
    Image.fromarray(chelsea[:8, :8]).save(tmp_path / "x.png")
    sources = collect_images([tmp_path / "a", tmp_path / "x.png", tmp_path / "empty",
                              tmp_path / "nope.jpg", chelsea, ("named", chelsea)])
    names = [s.name for s in sources]
    assert names == ["x", "y", "x-2", "empty", "nope", "image-4", "named"]
    errors = {s.name: s.error for s in sources}
    assert errors["x"] is None and errors["y"] is None and errors["image-4"] is None
    assert "contains no images" in errors["empty"] and "empty" in errors["empty"]
    assert "no such file" in errors["nope"]
    assert sources[5].load().shape == chelsea.shape


def test_as_rgb_array_shapes():
    grey = np.arange(12, dtype=np.float64).reshape(3, 4) / 11
    out = as_rgb_array(grey)
    assert out.shape == (3, 4, 3) and out[-1, -1, 0] == 255 and out[0, 0, 2] == 0
    chw = np.zeros((3, 5, 6), dtype=np.uint8)
    assert as_rgb_array(chw).shape == (5, 6, 3)
    with pytest.raises(ValueError, match="H x W"):
        as_rgb_array(np.zeros((2, 3, 4, 5)))


def test_atomic_write_keeps_old_content_on_failure(tmp_path):
    path = tmp_path / "r.json"
    save_json(path, {"a": [1, float("nan")], "p": tmp_path})
    assert json.loads(path.read_text()) == {"a": [1, None], "p": str(tmp_path)}
    with pytest.raises(RuntimeError), atomic_write(path, "w") as fh:
        fh.write('{"half": ')
        raise RuntimeError("disk full")
    assert json.loads(path.read_text())["a"] == [1, None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temp file left
    save_npy(tmp_path / "m.npy", np.ones((2, 3), np.float32))
    m = np.load(tmp_path / "m.npy")
    assert m.dtype == np.float32 and m.shape == (2, 3)


def test_output_names_are_the_stems(tmp_path, chelsea):
    """Unicode, spaces and punctuation are kept; only real collisions get ``-2``."""
    names = ["my cät 猫 (1)", "café #2 & 50%", "Bild.v2", "a"]
    for n in names:
        Image.fromarray(chelsea[:8, :8]).save(tmp_path / f"{n}.png")
    Image.fromarray(chelsea[:8, :8]).save(tmp_path / "A.jpg")  # a collision on macOS/Windows
    sources = collect_images([tmp_path / f"{n}.png" for n in names] + [tmp_path / "A.jpg"])
    assert [s.name for s in sources] == [*names, "A-2"]
    assert collect_images([("x/y", chelsea), ("  ", chelsea)])[0].name == "x_y"
    assert collect_images([("  ", chelsea)])[0].name == "image"


def test_check_output_dir(tmp_path):
    from inputiba.data.io import check_output_dir
    from inputiba.errors import OutputDirError

    assert check_output_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    assert not list(tmp_path.iterdir())  # the write test left nothing behind
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputDirError, match="is a file"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(OutputDirError, match="cannot be created"):
        check_output_dir(tmp_path / "file" / "out")
