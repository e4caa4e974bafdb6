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


def _edited_copy(saved, tmp_path, edit):
    import shutil
    d, _, _ = saved
    d2 = tmp_path / "edited"
    shutil.copytree(d, d2)
    meta = json.loads((d2 / "metadata.json").read_text())
    edit(meta)
    (d2 / "metadata.json").write_text(json.dumps(meta))
    return d2


@pytest.mark.parametrize("key", ["class_names", "colours", "channel_names", "normalization", "config"])
def test_a_missing_metadata_key_is_named_with_the_pixlab_that_wrote_it(saved, tmp_path, capsys, key):
    from pixlab.app.cli import main
    d2 = _edited_copy(saved, tmp_path, lambda m: (m.pop(key), m["versions"].update(pixlab="0.0.7")))
    with pytest.raises(ValueError, match=rf"has no '{key}' \(written by pixlab 0\.0\.7\); .*save the model again"):
        pixlab.load_model(d2)
    import tifffile
    tifffile.imwrite(tmp_path / "x.tif", np.zeros((2, 32, 32), np.uint16))
    for argv in (["info", str(d2)], ["predict", "--model", str(d2), "--input", str(tmp_path / "x.tif"), "--output",
                                     str(tmp_path / "p.ome.tif")]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("pixlab: error: ") and f"has no '{key}'" in err and err.count("\n") == 1, err


def test_a_missing_normalisation_field_and_an_unknown_writer(saved, tmp_path):
    def edit(m):
        del m["normalization"]["scale"], m["versions"]
    with pytest.raises(ValueError, match=r"has no 'scale' in 'normalization' \(written by an unknown pixlab version\)"):
        pixlab.load_model(_edited_copy(saved, tmp_path, edit))


def test_saved_files_honour_the_umask(saved, tmp_path):
    _, _, model = saved
    old = os.umask(0o022)
    try:
        model.save(tmp_path / "shared")
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "shared").iterdir()}
    assert modes == {"model.safetensors": 0o644, "metadata.json": 0o644}  # safetensors alone writes 0600


def test_save_refuses_an_existing_folder_unless_overwrite(saved, tmp_path):
    _, _, model = saved
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"model folder '.*m' exists; pass overwrite=True"):
        model.save(tmp_path / "m")
    assert os.listdir(tmp_path / "m") == ["notes.txt"]
    model.save(tmp_path / "m", overwrite=True)
    assert pixlab.load_model(tmp_path / "m").class_names == model.class_names
