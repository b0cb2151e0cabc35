"""``detdemo models``: the zoo as a table."""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list every architecture in the model zoo")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from detdemo.models import list_models

    rows = [
        {"name": s.name, "family": s.family, "masks": s.masks, "coco_weights": s.coco_weights is not None,
         "summary": s.summary}
        for s in list_models()
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows)
    print(f"{'name':<{width}}  {'family':<13} masks  COCO  summary")
    for r in rows:
        print(f"{r['name']:<{width}}  {r['family']:<13} {'yes' if r['masks'] else 'no':<5}  "
              f"{'yes' if r['coco_weights'] else 'no':<4}  {r['summary']}")
    return 0
