"""Readers of boxes (VOC XML, labelme JSON, ImageNet folders) and the built-in localisation set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from inputiba.data.datasets import (
    LABEL_TO_IMAGENET,
    ImageNetBoxFolder,
    boxes_to_mask,
    load_localization_set,
    quokka,
    read_labelme,
    read_voc_xml,
    scale_boxes,
)

VOC = """<annotation>
  <filename>n01440764_1</filename>
  <size><width>8</width><height>6</height><depth>3</depth></size>
  <object><name>{wnid}</name><bndbox><xmin>2</xmin><ymin>1</ymin><xmax>4</xmax><ymax>3</ymax></bndbox></object>
  <object><name>n99999999</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>8</xmax><ymax>6</ymax></bndbox></object>
</annotation>"""


def test_boxes_to_mask_hand_case():
    # columns 1..3 (centres 1.5, 2.5, 3.5 in [1, 4]), rows 0..2
    m = boxes_to_mask(np.array([[1, 0, 4, 3]]), (4, 5))
    expected = np.zeros((4, 5), bool)
    expected[0:3, 1:4] = True
    np.testing.assert_array_equal(m, expected)
    assert not boxes_to_mask(np.zeros((0, 4)), (3, 3)).any()


def test_scale_boxes():
    b = scale_boxes(np.array([[10, 20, 30, 40]]), (100, 50), (200, 100))
    np.testing.assert_allclose(b, [[20, 40, 60, 80]])


def test_read_voc_xml_converts_to_continuous_pixels(tmp_path):
    p = tmp_path / "a.xml"
    p.write_text(VOC.format(wnid="n01440764"))
    ann = read_voc_xml(p)
    np.testing.assert_allclose(ann.boxes, [[1, 0, 4, 3], [0, 0, 8, 6]])
    assert ann.labels == ["n01440764", "n99999999"]
    assert ann.image_size == (6, 8)
    # xmin=2..xmax=4 (1-based) = columns 1..3
    assert boxes_to_mask(ann.boxes[:1], (6, 8))[0].tolist() == [0, 1, 1, 1, 0, 0, 0, 0]


def test_read_voc_xml_bad_file(tmp_path):
    p = tmp_path / "bad.xml"
    p.write_text("<annotation><object><name>x</name></object></annotation>")
    with pytest.raises(ValueError, match="bndbox"):
        read_voc_xml(p)


def test_read_labelme_rectangle_polygon_and_ignore(tmp_path):
    data = {
        "shapes": [
            {"label": "bus", "shape_type": "rectangle", "points": [[6, 4], [2, 1]]},
            {"label": "car", "shape_type": "polygon", "points": [[0, 0], [4, 0], [0, 4]]},
            {"label": "__ignore__", "shape_type": "polygon", "points": [[0, 0], [1, 0], [0, 1]]},
            {"label": "dot", "shape_type": "point", "points": [[1, 1]]},
        ],
        "imageHeight": 6,
        "imageWidth": 8,
    }
    p = tmp_path / "x.json"
    p.write_text(json.dumps(data))
    ann = read_labelme(p)
    assert ann.labels == ["bus", "car"]
    np.testing.assert_allclose(ann.boxes, [[2, 1, 6, 4], [0, 0, 4, 4]])
    assert ann.masks.shape == (2, 6, 8)
    # rectangle mask = pixels whose centre is inside: rows 1..3, columns 2..5
    np.testing.assert_array_equal(ann.masks[0], boxes_to_mask(ann.boxes[:1], (6, 8)))
    # triangle x + y <= 4: pixel (0, 0) inside, (3, 3) outside
    assert ann.masks[1][0, 0] and not ann.masks[1][3, 3]
    assert ann.masks[1].sum() < boxes_to_mask(ann.boxes[1:], (6, 8)).sum()


def test_read_labelme_not_labelme(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{}")
    with pytest.raises(ValueError, match="shapes"):
        read_labelme(p)


def test_imagenet_box_folder(tmp_path):
    (tmp_path / "imagenet_class_index.json").write_text(
        json.dumps({"0": ["n01440764", "tench"], "1": ["n01443537", "goldfish"]})
    )
    for wnid, stem, with_xml in [("n01440764", "a", True), ("n01443537", "b", False)]:
        d = tmp_path / "images" / "val" / wnid
        d.mkdir(parents=True)
        Image.fromarray(np.full((6, 8, 3), 7, np.uint8)).save(d / f"{stem}.JPEG")
        if with_xml:
            a = tmp_path / "annotations" / "val" / wnid
            a.mkdir(parents=True)
            (a / f"{stem}.xml").write_text(VOC.format(wnid=wnid))
    ds = ImageNetBoxFolder(tmp_path, "val")
    assert len(ds) == 2
    s0, s1 = ds[0], ds[1]
    assert ds.target(0) == 0 and ds.target(1) == 1
    assert s0.image.shape == (6, 8, 3) and s0.image.dtype == np.uint8
    assert s0.class_ids == [(0,), ()]  # the unknown wnid gets no class
    np.testing.assert_allclose(s0.boxes_for(0), [[1, 0, 4, 3]])
    assert s1.boxes.shape == (0, 4) and s1.boxes_for(1).shape == (0, 4)


def test_imagenet_box_folder_bad_wnid(tmp_path):
    (tmp_path / "imagenet_class_index.json").write_text(json.dumps({"0": ["n01440764", "tench"]}))
    (tmp_path / "images" / "val" / "cats").mkdir(parents=True)
    with pytest.raises(ValueError, match="'cats'"):
        ImageNetBoxFolder(tmp_path)


def test_label_classes_match_torchvision_names():
    from torchvision.models import ResNet50_Weights

    names = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    expected_words = {
        "bus": "bus",
        "bottle": "bottle",
        "sofa": "couch",
        "quokka": "wallaby",
    }
    for label, word in expected_words.items():
        assert any(word in names[i] for i in LABEL_TO_IMAGENET[label]), label
    assert {names[i] for i in LABEL_TO_IMAGENET["chair"]} == {
        "barber chair",
        "folding chair",
        "rocking chair",
        "throne",
    }
    assert names[817] == "sports car" and 817 in LABEL_TO_IMAGENET["car"]
    assert LABEL_TO_IMAGENET["person"] == ()


def test_builtin_localization_set():
    samples = load_localization_set()
    names = [s.name for s in samples]
    assert names[-1] == "quokka" and len(samples) == 5
    labels = {lab for s in samples for lab in s.labels}
    assert {"person", "bottle", "chair", "sofa", "bus", "car", "quokka"} <= labels
    for s in samples:
        h, w = s.image.shape[:2]
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3
        assert len(s.labels) == len(s.boxes) == len(s.class_ids)
        assert (s.boxes[:, 0] >= 0).all() and (s.boxes[:, 2] <= w + 1).all()
        assert (s.boxes[:, 3] <= h + 1).all() and (s.boxes[:, 2] > s.boxes[:, 0]).all()
        # each polygon mask lies inside its box (give or take the edge pixel)
        for box, m in zip(s.boxes, s.masks, strict=True):
            grown = box + np.array([-1, -1, 1, 1], np.float32)
            # (imgaug's quokka polygon pokes out of its box by a few pixels: 0.1% of its area)
            assert m.any() and (m & ~boxes_to_mask(grown[None], (h, w))).sum() <= 0.01 * m.sum()
    bus = next(s for s in samples if "bus" in s.labels)
    assert len(bus.boxes_for(779)) == 2 and len(bus.boxes_for(817)) == 1


def test_quokka():
    q = quokka()
    assert q.image.shape == (643, 960, 3)
    np.testing.assert_allclose(q.boxes, [[148, 50, 550, 642]])
    assert q.imagenet_ids == [104, 106]
    assert q.mask_for(104).sum() > 0.5 * boxes_to_mask(q.boxes, (643, 960)).sum()


def test_data_errors_are_inputiba_errors(tmp_path):
    """Missing, empty or malformed data raise inputiba's own errors (catchable as
    InputIBAError), which are still the built-in FileNotFoundError / ValueError."""
    from inputiba.data.folders import list_dataset, read_subset
    from inputiba.data.maps import load_map, map_files
    from inputiba.errors import DataError, DataNotFoundError, InputIBAError

    (tmp_path / "empty").mkdir()
    bad_map = tmp_path / "m.npy"
    np.save(bad_map, np.zeros((2, 3, 4)))
    bad_xml = tmp_path / "a.xml"
    bad_xml.write_text("<annotation><object><name>x</name>")
    cases = [
        (lambda: list_dataset(tmp_path / "nope"), DataNotFoundError, FileNotFoundError, "nope"),
        (lambda: list_dataset(tmp_path / "empty"), DataError, ValueError, "no images"),
        (lambda: read_subset(tmp_path / "s.txt"), DataNotFoundError, FileNotFoundError, "s.txt"),
        (lambda: map_files(tmp_path / "maps"), DataNotFoundError, FileNotFoundError, "maps"),
        (lambda: load_map(bad_map), DataError, ValueError, "H x W"),
        (lambda: read_voc_xml(bad_xml), DataError, ValueError, "a.xml"),
    ]
    for call, kind, builtin, words in cases:
        with pytest.raises(kind, match=words) as info:
            call()
        assert isinstance(info.value, InputIBAError) and isinstance(info.value, builtin)


def test_a_missing_maps_folder_is_one_clean_line(tmp_path, capsys):
    from inputiba.cli import main

    assert main(["evaluate", str(tmp_path / "nope"), "--builtin"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("inputiba: error:") and "does not exist" in err
    assert "FileNotFoundError" not in err and "--traceback" not in err  # inputiba's own error
