"""The workshop set-up check (``pixlab run --check``): Python, libraries, kernel, notebooks, a tiny training."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pixlab.app.parameters import find_notebooks, notebook_parameters
from pixlab.app.project import _pixlab_version

__all__ = ["check_setup"]


def check_setup(notebooks=None, train: bool = True) -> list[tuple[str, bool, str]]:
    """Check that this machine can run the workshop: Python, libraries, kernel, notebooks, a tiny training.

    Parameters
    ----------
    notebooks : path, optional
        Notebooks folder (see :func:`find_notebooks`).
    train : bool
        Also train a tiny network for a few seconds (checks torch and times the CPU).

    Returns
    -------
    list of (what, ok, detail)
    """
    import platform
    results: list[tuple[str, bool, str]] = []

    def check(what, fn):
        try:
            results.append((what, True, str(fn())))
        except Exception as e:  # every failure becomes a line of the report
            results.append((what, False, f"{type(e).__name__}: {e}"))

    check("python", lambda: f"{platform.python_version()} ({sys.executable})")
    check("pixlab", _pixlab_version)

    def libs():
        import importlib.metadata as md
        names = ("torch", "segmentation-models-pytorch", "papermill", "ipykernel", "ipywidgets", "ipycanvas",
                 "jupyter_bokeh", "jupyterlab")
        missing = []
        found = []
        for n in names:
            try:
                found.append(f"{n} {md.version(n)}")
            except md.PackageNotFoundError:
                missing.append(n)
        if missing:
            raise ModuleNotFoundError(f"missing {', '.join(missing)}; install with `pip install -e .[lab]`")
        return ", ".join(found)
    check("libraries", libs)

    def kernel():
        from jupyter_client.kernelspec import KernelSpecManager
        spec = KernelSpecManager().get_kernel_spec("python3")
        exe = spec.argv[0]
        if exe in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"):
            exe = sys.executable  # jupyter_client starts "python" kernels with the running interpreter
        if Path(exe).absolute() != Path(sys.executable).absolute():
            raise RuntimeError(f"kernel python3 runs {exe}, not this Python {sys.executable}; run "
                               "`make kernel` and pass --kernel pixlab")
        return f"python3 -> {exe}"
    check("jupyter kernel", kernel)

    def nbs():
        found = find_notebooks(notebooks)
        return f"{len(found)} notebooks: {', '.join(p.name for p in found)}; {len(notebook_parameters(found))} parameters"
    check("notebooks", nbs)

    def sample():
        from pixlab.datasets import sample_ihc
        img, labels, names = sample_ihc()
        return f"sample IHC image {img.shape}, {int((labels > 0).sum())} labelled pixels, classes {names}"
    check("sample data", sample)

    if train:
        def tiny_training():
            import torch
            from pixlab.training.config import TrainConfig
            from pixlab.datasets import sample_ihc
            from pixlab.training.trainer import train as _train
            img, labels, names = sample_ihc()
            cfg = TrainConfig(architecture="tiny_unet", pretrained=False, tile_size=64, epochs=2, batch_size=4,
                              patches_per_epoch=8, recipe="standard", device="cpu", early_stopping=False)
            t0 = time.monotonic()
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _train([(img, labels)], cfg, class_names=names, progress=False)
            return f"2 tiny epochs in {time.monotonic() - t0:.1f} s on {torch.get_num_threads()} CPU thread(s)"
        check("training", tiny_training)
    return results
