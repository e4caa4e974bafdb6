"""Argmax label maps keep every class: uint8 up to 255 classes, uint16 beyond (never wrapped)."""

import numpy as np
import pytest
import tifffile
import torch

import pixlab
from pixlab.image.io import Image, write_ome_tiff
from pixlab.inference.outputs import PreviewLabels, to_output
from pixlab.labels.classids import argmax_labels, label_dtype
from pixlab.labels.masks import default_colours
from pixlab.model.model import Model

K = 300  # more classes than uint8 holds
STATS = {"method": "min_max", "per_channel": True, "offset": [0.0], "scale": [1.0], "clip": None}


def _model(k=K):
    # A 1x1 convolution that makes class k (the last) win where the image is bright, class 1 elsewhere.
    net = torch.nn.Conv2d(1, k, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
        net.weight[k - 1, 0] = 10.0
        net.bias[0] = 5.0
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=32, recipe="standard",
                             device="cpu")
    return Model(net, [f"c{i}" for i in range(1, k + 1)], default_colours(k), ["ch"], STATS, cfg)


def _image():
    a = np.zeros((1, 40, 48), np.float32)
    a[0, 10:30, 12:36] = 1.0
    return Image(a, ["ch"])


def test_the_dtype_rule():
    assert (label_dtype(255), label_dtype(256), label_dtype(65535)) == (np.uint8, np.uint16, np.uint16)
    with pytest.raises(ValueError, match="at most 65535"):
        label_dtype(65536)
    p = np.zeros((K, 2, 2), np.float32)
    p[K - 1] = 1
    assert argmax_labels(p).dtype == np.uint16 and (argmax_labels(p) == K).all()
    assert argmax_labels(p[:3]).dtype == np.uint8


def test_predict_labels_keeps_class_300():
    labels = _model().predict_labels(_image())
    assert labels.dtype == np.uint16
    assert set(np.unique(labels).tolist()) == {1, K}
    assert (labels[10:30, 12:36] == K).all()


def test_outputs_and_previews_keep_class_300():
    p = np.zeros((K, 4, 6), np.float32)
    p[K - 1, :, :3] = 1
    p[0, :, 3:] = 1
    out = to_output(p, "labels", "uint8")
    assert out.dtype == np.uint16 and out[0, 0, 0] == K
    for factor in (1, 2):
        prev = PreviewLabels(K, (4, 6), factor)
        prev.add(p)
        assert prev.labels.max() == K


@pytest.mark.parametrize("suffix", [".ome.tif", ".ome.zarr"])
def test_predict_file_labels_keep_class_300(tmp_path, suffix):
    from pixlab.inference.predict import predict_file
    src = tmp_path / "in.ome.tif"
    write_ome_tiff(src, _image())
    out = tmp_path / f"labels{suffix}"
    predict_file(_model(), src, out, output="labels", progress=False, backend="eager")
    if suffix == ".ome.tif":
        lab = tifffile.imread(out)
    else:
        import zarr
        lab = zarr.open_group(str(out), mode="r")["0"][:]
    lab = np.squeeze(lab)
    assert lab.dtype == np.uint16 and lab.max() == K and (lab[10:30, 12:36] == K).all()


def test_pixel_maps_keep_class_300():
    from pixlab.analysis.maps import pixel_maps
    maps = pixel_maps(_model(), _image())
    assert maps["prediction"].dtype == np.uint16 and maps["prediction"].max() == K
