"""The CLI's warnings and errors start on a line of their own, even while a progress bar is live."""

import subprocess
import sys

# A training run that warns mid-epoch and then fails, as a NaN loss or a broken callback would.
_FAILING_TRAIN = r"""
import sys, warnings
sys.path.insert(0, {tests!r})
from pathlib import Path
import pixlab.training.loop as loop
from pixlab.app.cli import main
from test_cli import _write_sample
tmp = Path({tmp!r})
img, lab = _write_sample(tmp)
orig, calls = loop._step, [0]
def step(run, x, y, p):
    calls[0] += 1
    if calls[0] == 3:
        warnings.warn("odd batch")
    if calls[0] == 5:
        raise ValueError("the training loss became NaN")
    return orig(run, x, y, p)
loop._step = step
sys.exit(main(["train", "--image", str(img), "--labels", str(lab), "--classes", "bg", "nuclei",
               "--output", str(tmp / "m"), "--set", "architecture=tiny_unet", "--set", "pretrained=false",
               "--set", "tile_size=64", "--set", "epochs=3", "--set", "patches_per_epoch=4",
               "--set", "batch_size=2"]))
"""


def _own_line(err: str, text: str) -> bool:
    """True when ``text`` is on some line with nothing before it but carriage returns/blanks (a cleared bar)."""
    lines = [ln for ln in err.split("\n") if text in ln]
    return bool(lines) and all(not ln[:ln.index(text)].strip() for ln in lines)


def test_warning_and_error_during_training_are_on_their_own_lines(tmp_path):
    from pathlib import Path
    tests = str(Path(__file__).parent)
    code = _FAILING_TRAIN.format(tests=tests, tmp=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "training:" in r.stderr  # the bar was live when the warning came
    assert _own_line(r.stderr, "pixlab: warning: odd batch"), r.stderr
    assert _own_line(r.stderr, "pixlab: error: the training loss became NaN"), r.stderr
    assert "Traceback" not in r.stderr


def test_error_after_a_bar_left_open_starts_a_new_line(monkeypatch, capsys):
    from tqdm import tqdm

    import pixlab.app.commands.info as info

    def run(args):  # a command failing while its bar is still open (held by the traceback's frames)
        bar = tqdm(total=3, desc="images", file=sys.stderr)
        bar.update(1)
        raise ValueError("image 2 is unreadable")

    monkeypatch.setattr(info, "run", run)
    from pixlab.app.cli import main
    assert main(["info", "x.tif"]) == 2
    err = capsys.readouterr().err
    assert "images:" in err and _own_line(err, "pixlab: error: image 2 is unreadable"), repr(err)
