"""``pixlab info``: describe a model bundle or an image."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a model folder or an image file",
                       description="Describe a model folder (classes, channels, network, epochs; the best "
                                   "epoch is counted from 1, e.g. '3 of 5', while metadata.json stores its "
                                   "0-based index into history) or an image file (shape, channels, pixel "
                                   "size, pyramid levels).")
    p.add_argument("path")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path
    path = Path(args.path)
    if path.is_dir():
        from pixlab.model.bundle import read_metadata
        from pixlab.model.folder import epoch_text
        m = read_metadata(path)
        c = m["config"]
        n = len(m.get("history", []))
        print(json.dumps({"classes": m["class_names"], "channels": m["channel_names"],
                          "architecture": c["architecture"], "encoder": c["encoder"],
                          "epochs_trained": n, "best_epoch": epoch_text(m.get("best_epoch"), n),
                          "versions": m.get("versions")}, indent=2))
    else:
        from pixlab.image.io import open_image
        img = open_image(path)
        print(json.dumps({"shape": list(img.shape), "dtype": str(img.dtype), "channels": img.channel_names,
                          "pixel_size_um": img.pixel_size, "levels": [list(l.shape) for l in img.levels]}, indent=2))
    return 0
