"""``pixlab export --format FORMAT MODEL OUT``: write a model for other tools.

Formats: bioimageio (a bioimage.io model package OUT.zip, for ilastik, deepImageJ, napari and
bioimageio.core), qupath-dl (the folder the QuPath DL pixel classifier extension loads from
{project}/classifiers/dl/NAME/; OUT may also be the project folder), torchscript (OUT.pt) and onnx
(OUT.onnx). An existing OUT is refused unless --overwrite.
"""

from __future__ import annotations

from pathlib import Path

from pixlab.app.commands import HelpFormatter


def add_parser(sub) -> None:
    from pixlab.model.export import FORMATS

    p = sub.add_parser("export", help="export a model to bioimage.io, QuPath, TorchScript or ONNX",
                       description=__doc__.split("\n\n", 1)[1],
                       formatter_class=HelpFormatter)
    p.add_argument("--format", required=True, choices=list(FORMATS), help="what to write")
    p.add_argument("model", metavar="MODEL", help="model folder (written by model.save / pixlab train)")
    p.add_argument("out", metavar="OUT", help="output file or folder")
    p.add_argument("--sample", metavar="IMAGE", default=None,
                   help="bioimageio: image for the test tensors and cover (a training image is best)")
    p.add_argument("--name", default=None, help="model name shown by the other tool")
    p.add_argument("--description", default=None, help="one-line description")
    p.add_argument("--author", action="append", default=None, metavar="NAME",
                   help="bioimageio: author (repeat for several; default: your login name)")
    p.add_argument("--license", default=None, help="bioimageio: SPDX licence id (default CC-BY-4.0)")
    p.add_argument("--cite", action="append", default=None, metavar="TEXT|DOI_OR_URL",
                   help="bioimageio: citation 'text|doi' or 'text|https://url' (repeatable)")
    p.add_argument("--weights", nargs="+", default=None, metavar="FORMAT",
                   choices=("torchscript", "onnx", "pytorch_state_dict"),
                   help="bioimageio: weight formats (default: torchscript onnx, + pytorch_state_dict for smp)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.set_defaults(func=run)


def _citations(items):
    if not items:
        return None
    out = []
    for item in items:
        text, sep, ref = item.rpartition("|")
        if not sep or not text.strip() or not ref.strip():
            raise ValueError(f"--cite {item!r}: write 'text|doi' or 'text|https://url'")
        key = "url" if ref.strip().startswith(("http://", "https://")) else "doi"
        out.append({"text": text.strip(), key: ref.strip()})
    return out


def run(args) -> int:
    from pixlab.model.bundle import load_model
    from pixlab.model.export import export_model

    model = load_model(args.model)
    out = Path(args.out)
    if args.format == "qupath-dl":
        from pixlab.model.export.qupath import qupath_target

        out_checked = qupath_target(out, model, args.name)
    else:
        out_checked = out
    if out_checked.exists() and not args.overwrite:
        raise FileExistsError(f"'{out_checked}' already exists; pass --overwrite to replace it, or choose "
                              "another name")
    options = {}
    if args.format == "bioimageio":
        options = dict(sample=args.sample, name=args.name, description=args.description, authors=args.author,
                       license=args.license, cite=_citations(args.cite), weights=args.weights)
    elif args.format == "qupath-dl":
        options = dict(name=args.name, description=args.description)
    else:
        given = [flag for flag, value in (("--sample", args.sample), ("--name", args.name),
                                          ("--author", args.author), ("--license", args.license),
                                          ("--cite", args.cite), ("--weights", args.weights),
                                          ("--description", args.description)) if value]
        if given:
            raise ValueError(f"{', '.join(given)} do not apply to --format {args.format}; leave them out")
    written = export_model(model, out, args.format, **options)
    print(f"wrote {written}")
    return 0
