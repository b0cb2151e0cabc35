"""``detdemo data shapes|pennfudan|info|convert``: make, fetch, inspect and convert datasets."""

from __future__ import annotations

import argparse
from collections import Counter


def add_parser(sub) -> None:
    from detdemo.data.convert import DEFAULT_SPLITS, SPLITS, TARGETS
    from detdemo.data.layout import LAYOUTS

    p = sub.add_parser("data", help="make, download, inspect or convert datasets")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    s = dsub.add_parser("shapes", help="write a synthetic shapes instance-segmentation dataset (COCO format)")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--train", type=int, default=200, help="number of training images")
    s.add_argument("--val", type=int, default=50, help="number of validation images")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--classes", default=None, help="comma-separated shape classes (default circle,square,triangle)")
    s.add_argument("--min-side", type=int, default=224)
    s.add_argument("--max-side", type=int, default=416)
    s.add_argument("--max-objects", type=int, default=6)
    s.set_defaults(func=run_shapes)

    f = dsub.add_parser("pennfudan", help="download and unpack the Penn-Fudan pedestrian dataset")
    f.add_argument("--out", required=True, help="folder to unpack into")
    f.add_argument("--url", default=None, help="archive URL (default: the official one)")
    f.add_argument("--zip", default=None, help="use an already downloaded zip instead")
    f.add_argument("--md5", default=None, help="expected MD5 of the archive: refuse anything else")
    f.set_defaults(func=run_pennfudan)

    i = dsub.add_parser("info", help="detect a dataset's layout and summarise the splits train and eval use")
    i.add_argument("--data", required=True)
    i.add_argument("--layout", default=None, choices=LAYOUTS)
    i.add_argument("--split", default=None, help="one split (default: train and val, as train and eval take them)")
    i.add_argument("--val-fraction", type=float, default=0.2, help="hold-out for datasets without splits (as train)")
    i.add_argument("--seed", type=int, default=0, help="the hold-out split's seed (as train)")
    i.set_defaults(func=run_info)

    c = dsub.add_parser("convert", help="write a dataset in another layout (COCO or YOLO), every split")
    c.add_argument("--data", required=True, help="any dataset --data reads")
    c.add_argument("--to", required=True, choices=TARGETS, help="layout to write")
    c.add_argument("--out", required=True, help="new or empty output folder")
    c.add_argument("--layout", default=None, choices=LAYOUTS, help="override the source's layout detection")
    c.add_argument("--split", nargs="+", default=list(DEFAULT_SPLITS), choices=SPLITS,
                   help="splits to write (default: train val; 'val' of a source without splits is the hold-out)")
    c.add_argument("--val-fraction", type=float, default=0.2, help="hold-out for sources without splits")
    c.add_argument("--seed", type=int, default=0, help="hold-out seed")
    c.set_defaults(func=run_convert)


def run_shapes(args: argparse.Namespace) -> int:
    from detdemo.data.shapes import DEFAULT_CLASSES, ShapesConfig, generate_shapes

    classes = tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else DEFAULT_CLASSES
    cfg = ShapesConfig(classes=classes, min_side=args.min_side, max_side=args.max_side,
                       max_objects=args.max_objects)
    out = generate_shapes(args.out, args.train, args.val, seed=args.seed, cfg=cfg)
    print(f"wrote {args.train} train + {args.val} val images of {', '.join(classes)} to {out}")
    return 0


def run_pennfudan(args: argparse.Namespace) -> int:
    from detdemo.data.download import PENNFUDAN_URL, fetch_pennfudan

    root = fetch_pennfudan(args.out, url=args.url or PENNFUDAN_URL, zip_file=args.zip, md5=args.md5)
    print(f"Penn-Fudan ready at {root}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Every split the other commands will use (train's train and val, eval's val), each with where it comes
    from, so that what ``info`` reports is what ``eval`` scores."""
    from detdemo.data import detect_layout, open_dataset

    layout, root = detect_layout(args.data)
    print(f"layout: {args.layout or layout} (root {root})")
    splits = [args.split] if args.split else ["train", "val"]
    counts: dict[str, Counter] = {}
    names: list[str] = []
    for split in splits:
        ds = open_dataset(args.data, split=split, layout=args.layout, val_fraction=args.val_fraction, seed=args.seed)
        counts[split] = Counter()
        objects = 0
        for i in range(len(ds)):
            labels = ds.load_target(i, *ds.get_height_and_width(i))["labels"].tolist()
            counts[split].update(ds.class_names[label - 1] for label in labels)
            objects += len(labels)
        names += [n for n in ds.class_names if n not in names]
        print(f"split {split}: {len(ds)} images, {objects} objects, masks: {'yes' if ds.has_masks else 'no'} "
              f"({ds.split_source or 'all images'})")
    print(f"objects per class ({' / '.join(splits)}):")
    for label, name in enumerate(names, start=1):
        print(f"  {label:>3} {name}: {' / '.join(str(counts[s].get(name, 0)) for s in splits)}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from detdemo.data.convert import convert_dataset

    summary = convert_dataset(args.data, args.to, args.out, layout=args.layout, splits=args.split,
                              val_fraction=args.val_fraction, seed=args.seed, progress=True)
    print(summary.line())
    return 0
