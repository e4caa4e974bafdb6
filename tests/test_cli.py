import subprocess
import sys

import numpy as np
import pytest

from pixlab.app.cli import main


def _write_sample(tmp_path):
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff
    from pixlab.labels.masks import save_labels
    img, truth = synthetic_fluorescence(shape=(64, 64), n_channels=2, n_nuclei=5, seed=2)
    write_ome_tiff(tmp_path / "img.ome.tif", img.read(), channel_names=img.channel_names)
    save_labels(tmp_path / "lab.png", strokes_from_mask(truth, strokes_per_class=3, seed=2))
    return tmp_path / "img.ome.tif", tmp_path / "lab.png"


def test_train_command_writes_a_loadable_bundle(tmp_path, capsys):
    import pixlab
    img, lab = _write_sample(tmp_path)
    args = ["train", "--image", str(img), "--labels", str(lab), "--classes", "bg", "nuclei",
            "--output", str(tmp_path / "model"), "--set", "architecture=tiny_unet", "--set", "pretrained=false",
            "--set", "tile_size=64", "--set", "epochs=1", "--set", "patches_per_epoch=4", "--set", "batch_size=2"]
    assert main(args) == 0
    model = pixlab.load_model(tmp_path / "model")
    assert model.class_names == ["bg", "nuclei"] and model.channel_names == ["DAPI", "Membrane"]
    out = capsys.readouterr().out
    assert "saved" in out and "(best epoch 1 of 1," in out  # people count epochs from 1
    assert main(["info", str(tmp_path / "model")]) == 0
    assert '"best_epoch": "1 of 1"' in capsys.readouterr().out
    assert model.metadata["best_epoch"] == 0  # stored: the 0-based index into history
    assert main(args) == 2  # exists -> refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("extra, msg", [
    (["--set", "tile_size=100"], "not divisible by 32"),
    (["--set", "epoch=3"], "did you mean 'epochs'"),
    (["--set", "learning_rate=-1"], "below the minimum"),
    (["--classes", "only"], "class id 2 but only 1 class names"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, extra, msg):
    img, lab = _write_sample(tmp_path)
    cmd = [sys.executable, "-m", "pixlab", "train", "--image", str(img), "--labels", str(lab),
           "--classes", "bg", "nuclei", "--output", str(tmp_path / "m")] + extra
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert msg in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0
    assert not (tmp_path / "m").exists()


def test_missing_image_file(tmp_path, capsys):
    assert main(["info", str(tmp_path / "nope.tif")]) == 2
    err = capsys.readouterr().err
    assert "nope.tif" in err and err.startswith("pixlab: error:")


def test_info_describes_an_image(tmp_path, capsys):
    img, _ = _write_sample(tmp_path)
    assert main(["info", str(img)]) == 0
    out = capsys.readouterr().out
    assert '"DAPI"' in out and "[\n    2,\n    64,\n    64\n  ]" in out


def test_run_help_states_the_notebooks_default_that_find_notebooks_uses(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: ./notebooks if it exists, else the notebooks/ folder of the source checkout" in text
