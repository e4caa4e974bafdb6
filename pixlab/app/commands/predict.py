"""``pixlab predict``: run a model over image files and folders.

One input image and an ``--output`` file name: the first ``--format`` is written to that name and
the others beside it (``x.ome.tif`` -> ``x.measurements.csv``, ``x.geojson``, ``x.overlay.png``); an
existing output is refused unless ``--overwrite``. Several images, or a folder: ``--output`` is a
folder, images whose outputs all exist are skipped (resume), and a failing image is reported on
one line while the others go on; the exit status is 1 if any image failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pixlab.app.commands import HelpFormatter

FORMAT_CHOICES = ("ome-tiff", "ome-zarr", "csv", "geojson", "png", "objects")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="predict images or folders of images with a trained model",
        description=__doc__.split("\n\n", 1)[1].replace("``", ""), formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="model folder (written by model.save / pixlab train)")
    p.add_argument("--input", required=True, nargs="+", action="extend", metavar="IMAGE_OR_FOLDER",
                   help="image files and/or folders of images")
    p.add_argument("--output", required=True, metavar="OUT",
                   help="output file for one input image, or output folder for several")
    p.add_argument("--format", nargs="+", choices=FORMAT_CHOICES, default=None, metavar="FORMAT",
                   help="what to write: ome-tiff or ome-zarr (raster), csv (area and objects per class), geojson "
                        "(QuPath objects), png (overlay), objects (one row per object, x.objects.csv); "
                        "default: from OUT's suffix, else ome-tiff")
    p.add_argument("--output-type", choices=("probabilities", "labels"), default="probabilities",
                   help="raster content: one channel per class, or the argmax label map (1..K)")
    p.add_argument("--dtype", choices=("uint8", "float16", "float32"), default="uint8",
                   help="probability pixel type (uint8 = round(255 p))")
    p.add_argument("--backend", choices=("eager", "onnxruntime", "auto"), default="auto",
                   help="inference engine: PyTorch, ONNX Runtime, or the fastest that agrees")
    p.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--tile-size", type=int, default=None,
                   help="network tile size in px, a multiple of 32 like in training (default: the model's)")
    p.add_argument("--channels", default=None, metavar="LIST",
                   help="image channels to use, in the model's order: names or 0-based indices separated by "
                        "commas (--channels DAPI,CD8 or --channels 0,2), or MODEL=IMAGE pairs "
                        "(--channels CD3=CD8,DAPI=DAPI). Needed when the image's channel count differs from "
                        "the model's or its names differ (default: match by name, else by position)")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per batch (default: 4 on CPU, from free memory on GPU)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--scheduler", default=None, metavar="local|ADDRESS",
                   help="run the images on a dask cluster (pixlab.inference.cluster): 'local' or a scheduler address")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("objects (geojson, objects and the counts in csv)")
    g.add_argument("--objects", choices=("detection", "annotation", "none"), default="detection",
                   help="one GeoJSON feature per connected object, as QuPath detections or annotations; "
                        "none: one MultiPolygon per class and no object counts")
    g.add_argument("--object-classes", nargs="+", default=None, metavar="CLASS",
                   help="classes made into objects (default: every class but the first, the background)")
    g.add_argument("--min-object-um2", type=float, default=0.0, metavar="AREA",
                   help="drop smaller objects (µm²; input pixels when the image has no pixel size)")
    g.add_argument("--fill-holes-um2", type=float, default=0.0, metavar="AREA",
                   help="fill smaller holes in objects (µm²; input pixels when the image has no pixel size)")
    g.add_argument("--smooth", type=float, default=0.0, metavar="PX",
                   help="outline smoothing radius in input pixels (0: exact pixel edges)")
    g.add_argument("--simplify", type=float, default=0.0, metavar="PX",
                   help="outline simplification tolerance in input pixels")
    p.set_defaults(func=run)


_SUFFIX_FORMATS = ((".objects.csv", "objects"), (".ome.zarr", "ome-zarr"), (".zarr", "ome-zarr"), (".tif", "ome-tiff"), (".tiff", "ome-tiff"),
                   (".csv", "csv"), (".geojson", "geojson"), (".json", "geojson"), (".png", "png"))


def _format_of(path: str):
    lower = path.lower().rstrip("/\\")
    return next((fmt for suffix, fmt in _SUFFIX_FORMATS if lower.endswith(suffix)), None)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for a GPU but PyTorch sees no CUDA device here; "
                         "use --device cpu (or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    return name


def _single_file_targets(out: str, formats):
    """(raster path or None, {side format: path}) for one input written to the file ``out``."""
    from pixlab.inference.outputs import derived_path

    guessed = _format_of(out)
    if formats is None:
        if guessed is None:
            raise ValueError(f"cannot tell what to write from --output '{out}'; name it '*.ome.tif', "
                             "'*.ome.zarr', '*.csv', '*.geojson' or '*.png', or give --format")
        formats = [guessed]
    if guessed != formats[0]:
        raise ValueError(f"--output '{out}' does not look like a {formats[0]} file (the first --format); "
                         f"give a name ending in the right suffix, e.g. "
                         f"'{derived_path(out, formats[0]).name}'")
    paths = {fmt: (Path(out) if i == 0 else derived_path(out, fmt)) for i, fmt in enumerate(formats)}
    raster = next((paths[f] for f in ("ome-tiff", "ome-zarr") if f in paths), None)
    return raster, {f: p for f, p in paths.items() if f not in ("ome-tiff", "ome-zarr")}


def run(args) -> int:
    from pixlab.inference.predict import _check_formats, list_images

    formats = _check_formats(args.format) if args.format else None
    images = list_images(args.input)  # missing inputs / empty folders: one clear error up front
    from pixlab.image.channels import parse_channels
    from pixlab.nn.tile_size import TILE_MULTIPLE, check_tile_size

    def tile_size(multiple=TILE_MULTIPLE):  # training's rule, checked before any image is read
        return None if args.tile_size is None else check_tile_size(args.tile_size, "--tile-size", multiple)

    channels = None if args.channels is None else parse_channels(args.channels)
    predict_kwargs = dict(output=args.output_type, dtype=args.dtype, backend=args.backend,
                          tile_size=args.tile_size, overlap=args.overlap, batch_size=args.batch_size,
                          channels=channels, objects=args.objects, object_classes=args.object_classes,
                          min_object_area=args.min_object_um2, fill_holes_area=args.fill_holes_um2,
                          smooth=args.smooth, simplify=args.simplify)
    out = args.output
    folder_mode = (len(images) > 1 or any(Path(i).is_dir() for i in args.input) or Path(out).is_dir()
                   or out.endswith(("/", os.sep)))

    if args.scheduler:
        try:
            from pixlab.inference.cluster import predict_many
        except ModuleNotFoundError as e:
            if e.name != "pixlab.inference.cluster":
                raise
            raise ValueError("--scheduler needs pixlab.inference.cluster, which this pixlab does not have; "
                             "run without --scheduler") from None
        predict_kwargs["tile_size"] = tile_size()  # the workers load the model
        results = predict_many(args.model, [os.fspath(p) for p in images], out, scheduler=args.scheduler,
                               overwrite=args.overwrite, formats=formats or ["ome-tiff"],
                               device=None if args.device == "auto" else args.device,
                               progress=not args.no_progress, **predict_kwargs)
        return _summary(results, echo_failures=args.no_progress)  # with progress it reported them

    from pixlab.model.bundle import load_model

    model = load_model(args.model, device=_device(args.device))
    predict_kwargs["tile_size"] = tile_size(model.tile_multiple)
    if not folder_mode:
        from pixlab.inference.predict import predict_file

        raster, side = _single_file_targets(out, formats)
        res = predict_file(model, images[0], raster, measurements=side.get("csv", False),
                           geojson=side.get("geojson", False), overlay=side.get("png", False),
                           objects_csv=side.get("objects", False), overwrite=args.overwrite, progress=not args.no_progress, **predict_kwargs)
        for path in res["outputs"].values():
            print(f"wrote {path}")
        print(f"{images[0]}: {res['tiles']} tiles in {res['seconds']:.1f} s ({res['backend']})")
        return 0

    from pixlab.inference.predict import predict_folder

    results = predict_folder(model, images, out, formats=formats or ["ome-tiff"], overwrite=args.overwrite,
                             progress=not args.no_progress, **predict_kwargs)
    return _summary(results, echo_failures=False)  # predict_folder reported each failure as it happened


def _summary(results, echo_failures: bool) -> int:
    results = list(results or [])
    counts = {s: sum(1 for r in results if r.get("status") == s) for s in ("done", "skipped", "failed")}
    print(f"{counts['done']} done, {counts['skipped']} skipped (outputs exist), {counts['failed']} failed")
    for r in results if echo_failures else ():
        if r.get("status") == "failed":
            print(f"failed: {r.get('input')}: {r.get('error')}", file=sys.stderr)
    return 1 if counts["failed"] else 0
