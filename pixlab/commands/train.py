"""``pixlab train``: train a model from images and label files."""

from __future__ import annotations

import argparse


def parse_set(items) -> dict:
    """Parse ``key=value`` overrides; values are read as YAML scalars/lists (``epochs=2``, ``channels=[0,1]``)."""
    import yaml
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set {item!r} must look like key=value, e.g. --set epochs=5")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a pixel classifier from images and sparse label masks",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--image", action="append", required=True, help="training image (repeat for several)")
    p.add_argument("--labels", action="append", required=True,
                   help="label mask for the image at the same position (PNG/TIFF, 0 = unlabelled)")
    p.add_argument("--classes", nargs="+", required=True, help="class names for label ids 1..K")
    p.add_argument("--output", required=True, help="model folder to write")
    p.add_argument("--config", help="TrainConfig profile (YAML or JSON)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a TrainConfig field")
    p.add_argument("--checkpoint-dir", help="write resumable checkpoints here")
    p.add_argument("--resume", help="continue from a checkpoint folder")
    p.add_argument("--init-from", help="start from a saved model's weights")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path
    from ..config import TrainConfig
    from ..train import train

    if len(args.image) != len(args.labels):
        raise ValueError(f"got {len(args.image)} --image but {len(args.labels)} --labels; give one label file per image")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"model folder '{out}' exists; pass --overwrite to replace it")
    base = TrainConfig.load(args.config).to_dict() if args.config else {}
    cfg = TrainConfig.from_dict({**base, **parse_set(args.set)})
    model = train(list(zip(args.image, args.labels)), cfg, class_names=args.classes,
                  checkpoint_dir=args.checkpoint_dir, resume=args.resume, init_from=args.init_from)
    model.save(out)
    best = model.metadata.get("best_epoch")
    h = model.history[best] if best is not None and best < len(model.history) else {}
    print(f"saved {out} (best epoch {best}, val mIoU {h.get('val_miou', float('nan')):.3f}, "
          f"stopped: {model.metadata.get('stop_reason')})")
    return 0
