import json
import os
import pickle

import numpy as np
import pytest

import pixlab


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    img, truth = synthetic_fluorescence(shape=(64, 64), n_channels=2, n_nuclei=5, seed=3)
    labels = strokes_from_mask(truth, strokes_per_class=3, seed=3)
    cfg = pixlab.TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=1, batch_size=2,
                             patches_per_epoch=2, recipe="standard", device="cpu")
    model = pixlab.train([(img, labels)], cfg, class_names=["bg", "fg"], progress=False)
    d = tmp_path_factory.mktemp("b") / "model"
    model.save(d)
    return d, img, model


def test_bundle_holds_only_safetensors_and_json(saved):
    d, _, _ = saved
    assert sorted(os.listdir(d)) == ["metadata.json", "model.safetensors"]
    meta = json.loads((d / "metadata.json").read_text())
    for key in ("class_names", "colours", "channel_names", "normalization", "config", "history", "versions",
                "data_fingerprint"):
        assert key in meta


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_files_are_refused_and_never_unpickled(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pth"
    evil.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(ValueError, match="pickle"):
        pixlab.load_model(evil)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "model.ckpt").write_bytes(evil.read_bytes())
    with pytest.raises(FileNotFoundError, match="pickle"):
        pixlab.load_model(folder)
    assert not marker.exists()


def test_metadata_cannot_point_outside_the_bundle(saved, tmp_path):
    import shutil
    d, _, _ = saved
    d2 = tmp_path / "m2"
    shutil.copytree(d, d2)
    meta = json.loads((d2 / "metadata.json").read_text())
    meta["weights"] = "../../etc/passwd"
    (d2 / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="outside the model folder"):
        pixlab.load_model(d2)


def test_missing_and_damaged_bundles(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        pixlab.load_model(tmp_path / "nothing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="metadata.json"):
        pixlab.load_model(empty)
    import shutil
    d, _, _ = saved
    d3 = tmp_path / "m3"
    shutil.copytree(d, d3)
    (d3 / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read weights"):
        pixlab.load_model(d3)


def test_channel_mismatch_names_both_counts(saved):
    _, img, model = saved
    three = np.zeros((3, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"has 3 channel\(s\).*expects 2"):
        model.predict(three)
