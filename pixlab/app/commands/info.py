"""``pixlab info``: describe a model bundle or an image."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="describe a model folder or an image file")
    p.add_argument("path")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path
    path = Path(args.path)
    if path.is_dir():
        from pixlab.model.bundle import read_metadata
        m = read_metadata(path)
        c = m["config"]
        print(json.dumps({"classes": m["class_names"], "channels": m["channel_names"],
                          "architecture": c["architecture"], "encoder": c["encoder"],
                          "epochs_trained": len(m.get("history", [])), "best_epoch": m.get("best_epoch"),
                          "versions": m.get("versions")}, indent=2))
    else:
        from pixlab.image.io import open_image
        img = open_image(path)
        print(json.dumps({"shape": list(img.shape), "dtype": str(img.dtype), "channels": img.channel_names,
                          "pixel_size_um": img.pixel_size, "levels": [list(l.shape) for l in img.levels]}, indent=2))
    return 0
