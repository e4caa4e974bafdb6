"""pixlab: deep-learning pixel classification (semantic segmentation) of microscopy images.

The public API::

    img = pixlab.open_image(path_or_array)
    cfg = pixlab.TrainConfig(epochs=50, batch_size=8, tile_size=512)
    model = pixlab.train([(img, labels)], cfg, class_names=["background", "nuclei"])
    probs = model.predict(img)            # (K, Y, X) float32
    model.save(folder); model = pixlab.load_model(folder)
    pixlab.predict_file(model, in_path, out_path)
"""

from importlib.metadata import PackageNotFoundError, version as _version

from pixlab.training.config import TrainConfig, preset
from pixlab.image.io import Image, open_image
# Imported eagerly: the submodule pixlab.train would otherwise shadow the function of the same name.
from pixlab.training.trainer import train
from pixlab.training.preparation import TrainingCancelled

try:
    __version__ = _version("pixlab")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

__all__ = ["Image", "open_image", "TrainConfig", "preset", "train", "Model", "load_model", "predict_file",
           "predict_folder", "predict_many", "TrainingCancelled",
           "datasets", "diagnostics", "import_onnx", "cross_validate", "__version__"]

# Torch-heavy parts load on first use so `import pixlab` (and `pixlab --help`) stays quick.
_LAZY = {
    "Model": ("pixlab.model.model", "Model"),
    "load_model": ("pixlab.model.bundle", "load_model"),
    "predict_file": ("pixlab.inference.predict", "predict_file"),
    "predict_folder": ("pixlab.inference.predict", "predict_folder"),
    "predict_many": ("pixlab.inference.cluster", "predict_many"),
    "datasets": ("pixlab.datasets", None),
    "diagnostics": ("pixlab.diagnostics", None),
    "import_onnx": ("pixlab.model.onnx_import", "import_onnx"),
    "cross_validate": ("pixlab.training.crossval", "cross_validate"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        mod, attr = _LAZY[name]
        m = importlib.import_module(mod)
        obj = m if attr is None else getattr(m, attr)
        globals()[name] = obj
        return obj
    raise AttributeError(f"module 'pixlab' has no attribute {name!r}")
