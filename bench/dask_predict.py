"""Batch inference: Dask (pixlab.inference.cluster.predict_many) on a 2-worker LocalCluster vs serial.

Writes N synthetic 2-channel images, saves a small trained model, then times
  * serial: ``pixlab.inference.predict.predict_folder`` in this process (torch uses all its threads),
  * dask cold: ``predict_many`` starting its own LocalCluster (start-up, imports, model loads included),
  * dask warm: ``predict_many`` again on a running 2-worker cluster (``overwrite=True``),
and prints the speed ratios serial / dask and the per-image overhead of Dask:
(warm wall time x workers - summed task time on the workers) / images.

Every number comes from this one run on this machine; on a shared machine run it twice.

    python bench/dask_predict.py [--images 8] [--size 512] [--workers 2] [--architecture tiny_unet]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="image height and width in pixels")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--architecture", default="tiny_unet", help="e.g. tiny_unet, or unet (with --encoder)")
    ap.add_argument("--encoder", default="resnet18")
    args = ap.parse_args()
    warnings.simplefilter("ignore", UserWarning)

    import torch
    from distributed import Client

    import pixlab
    from pixlab.inference.cluster import make_local_cluster, predict_many, summarize
    from pixlab.datasets import strokes_from_mask, synthetic_fluorescence
    from pixlab.image.io import write_ome_tiff
    from pixlab.inference.predict import predict_folder

    with tempfile.TemporaryDirectory(prefix="pixlab-bench-dask-") as tmp:
        root = Path(tmp)
        img, truth = synthetic_fluorescence(shape=(256, 256), n_channels=2, n_nuclei=20, seed=0)
        labels = strokes_from_mask(truth, strokes_per_class=8, radius=2, length=(6, 12), seed=0)
        cfg = pixlab.TrainConfig(architecture=args.architecture, encoder=args.encoder, pretrained=False,
                                 tile_size=128, epochs=1, batch_size=4, patches_per_epoch=8, recipe="standard",
                                 device="cpu")
        pixlab.train([(img, labels)], cfg, class_names=["background", "nuclei"], progress=False).save(root / "model")
        (root / "in").mkdir()
        for i in range(args.images):
            im, _ = synthetic_fluorescence(shape=(args.size, args.size), n_channels=2, n_nuclei=60, seed=100 + i)
            write_ome_tiff(root / "in" / f"img{i}.ome.tif", im, pyramid=False)
        n = args.images
        print(f"{n} images 2x{args.size}x{args.size}, {args.architecture}, {args.workers} Dask workers x 1 thread; "
              f"serial uses torch threads={torch.get_num_threads()}")

        t = time.perf_counter()
        model = pixlab.load_model(root / "model")
        predict_folder(model, root / "in", root / "serial", backend="eager", progress=False)
        serial = time.perf_counter() - t
        print(f"serial (predict_folder):           {serial:6.2f} s  ({serial / n:.3f} s/image)")

        t = time.perf_counter()
        rows = predict_many(root / "model", root / "in", root / "cold", backend="eager", progress=False)
        cold = time.perf_counter() - t
        assert summarize(rows)["done"] == n, rows
        print(f"dask cold (own LocalCluster):      {cold:6.2f} s  (cluster start, imports, model loads included)")

        with make_local_cluster(args.workers) as lc, Client(lc, set_as_default=False) as client:
            predict_many(root / "model", root / "in", root / "warm", client=client, backend="eager",
                         progress=False)  # first pass: worker imports and model loads
            t = time.perf_counter()
            rows = predict_many(root / "model", root / "in", root / "warm", client=client, overwrite=True,
                                backend="eager", progress=False)
            warm = time.perf_counter() - t
        s = summarize(rows)
        assert s["done"] == n, rows
        overhead = (warm * args.workers - s["seconds"]) / n
        print(f"dask warm (running cluster):       {warm:6.2f} s  ({s['seconds'] / n:.3f} s/image on a worker)")
        print(f"speed ratio serial/dask: warm {serial / warm:.2f}x, cold {serial / cold:.2f}x")
        print(f"Dask overhead per image: {overhead:.3f} s "
              f"(warm wall x {args.workers} workers - task time, / {n} images)")


if __name__ == "__main__":
    main()
