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

    i = dsub.add_parser("info", help="detect a dataset's layout and summarise a split")
    i.add_argument("--data", required=True)
    i.add_argument("--layout", default=None, choices=LAYOUTS)
    i.add_argument("--split", default="train")
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
    from detdemo.data import detect_layout, open_dataset

    layout, root = detect_layout(args.data)
    ds = open_dataset(args.data, split=args.split, layout=args.layout)
    counts: Counter = Counter()
    objects = 0
    for i in range(len(ds)):
        labels = ds.load_target(i, *ds.get_height_and_width(i))["labels"].tolist()
        counts.update(labels)
        objects += len(labels)
    print(f"layout: {args.layout or layout} (root {root})")
    print(f"split {args.split}: {len(ds)} images, {objects} objects, masks: {'yes' if ds.has_masks else 'no'}")
    for label, name in enumerate(ds.class_names, start=1):
        print(f"  {label:>3} {name}: {counts.get(label, 0)}")
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from detdemo.data.convert import convert_dataset

    summary = convert_dataset(args.data, args.to, args.out, layout=args.layout, splits=args.split,
                              val_fraction=args.val_fraction, seed=args.seed, progress=True)
    print(summary.line())
    return 0
