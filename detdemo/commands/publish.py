"""``detdemo publish``: a Hugging Face model repo (safetensors, config, exports, reports, model card) and a Space
that serves it, staged in one folder and, when asked, uploaded.

    detdemo publish --model runs/bccd --out publish/ [--push USER/NAME] [--space USER/NAME] [--private]

A run folder or checkpoint is exported first (TorchScript and ONNX, checked detection by detection, and by AP
with ``--data``); an export folder is published as it is, with the figures its checks recorded.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXPORT_WORK = "export"  # under --out: where a run or checkpoint is exported before staging


def add_parser(sub) -> None:
    p = sub.add_parser("publish", help="stage (and upload) a Hub model repo with a model card, and a Space")
    p.add_argument("--model", required=True, metavar="PATH",
                   help="a training run folder, a checkpoint, or an export folder (from `detdemo export`)")
    p.add_argument("--out", required=True, help="staging folder: model/ and space/ are written inside")
    p.add_argument("--push", metavar="USER/NAME", default=None, help="upload the model repo to this Hub repo id")
    p.add_argument("--space", metavar="USER/NAME", default=None, help="upload the Space to this Hub Space id")
    p.add_argument("--private", action="store_true", help="create the repos private")
    p.add_argument("--repo-id", metavar="USER/NAME", default=None,
                   help="the model repo id the card and Space name when not pushing (default: --push's)")
    p.add_argument("--revision", default=None,
                   help="the model repo revision the Space pins when not pushing (default: main; with --push: the "
                        "uploaded commit)")
    p.add_argument("--data", default=None, help="labelled data to verify every exported file's AP on (when "
                                                "exporting a run or checkpoint)")
    p.add_argument("--dataset", default=None, help="the dataset's name on the card (default: the name the training "
                                                   "data states, recorded at training; asked for when none is)")
    p.add_argument("--license", default=None, help="the model's licence id on the Hub, e.g. mit, apache-2.0, "
                                                   "cc-by-4.0, other (default: the licence the training data states, "
                                                   "recorded at training; asked for when none is)")
    p.add_argument("--examples", default=None, help="example images for the repo and the Space (default: the "
                                                    "export folder's examples/)")
    p.set_defaults(func=run)


def _source_checkpoint(model: Path) -> Path:
    """The checkpoint ``--model`` publishes: an export folder's eager reference, or the run's/checkpoint's own."""
    from detdemo.checkpoint import resolve_checkpoint_path
    from detdemo.errors import DetDemoError
    from export.formats import MANIFEST
    from export.runtime import folder_files

    if model.is_dir() and (model / MANIFEST).is_file():
        files = folder_files(model)
        if "eager" not in files:
            raise DetDemoError(f"{model}: holds no PyTorch checkpoint to publish as safetensors")
        return files["eager"]
    if not model.exists():
        raise DetDemoError(f"{model}: model path not found")
    return resolve_checkpoint_path(model)


def _export_folder(args: argparse.Namespace, out: Path) -> Path:
    """The folder to publish: ``--model`` itself when it is an export folder, else a fresh, checked export."""
    from detdemo.checkpoint import BEST
    from detdemo.commands.export import check_args, check_data_usable, exit_code, run_check
    from detdemo.errors import DetDemoError
    from export.exporters import export_checkpoint
    from export.formats import DEFAULT_FORMATS, MANIFEST
    from export.gate import INCONCLUSIVE
    from export.publish import copy_evaluation

    model = Path(args.model)
    if model.is_dir() and (model / MANIFEST).is_file():
        return model
    checkpoint = _source_checkpoint(model)
    if args.data:  # a dataset the check cannot use is refused before exporting anything
        check_data_usable(checkpoint, args.data, "val")
    folder = out / EXPORT_WORK
    export_checkpoint(checkpoint, DEFAULT_FORMATS, folder)
    if checkpoint.name == BEST:  # the run's evaluation pictures are best.pt's (the trainer draws them)
        copy_evaluation(checkpoint.parent, folder)
    status = run_check(check_args(folder, data=args.data))
    if status == exit_code(INCONCLUSIVE):
        raise DetDemoError(f"{folder}: the AP check on {args.data} could not decide whether the exported files "
                           "match (too few images: see accuracy.md there, which says about how many would); not "
                           "publishing unverified files: give more labelled images, or publish without --data")
    if status != 0:
        raise DetDemoError(f"{folder}: the exported files failed their check (see parity.md"
                           f"{' and accuracy.md' if args.data else ''} there); not publishing")
    return folder


def run(args: argparse.Namespace, api=None) -> int:
    """``api``: an ``HfApi`` stand-in (tests); the default is the real one, with the user's token."""
    from detdemo.checkpoint import load_checkpoint
    from detdemo.errors import DetDemoError
    from detdemo.fileio import IMAGE_EXTENSIONS
    from detdemo.hub.space import stage_space
    from detdemo.hub.upload import hub_api, push_folder
    from export.hub_files import parse_reference
    from export.publish import EXAMPLES, publish_names, stage_model_repo

    out = Path(args.out)
    if args.space and not (args.push or args.repo_id):
        raise DetDemoError("--space needs the model repo it serves: add --push USER/NAME (or --repo-id for one "
                           "already on the Hub)")
    for repo in (args.push, args.space, args.repo_id):
        if repo:
            parse_reference(repo)  # USER/NAME, checked before any work
    if args.push or args.space:
        api = hub_api(api)  # no token: say so before exporting anything
    source = _source_checkpoint(Path(args.model))
    names = publish_names(load_checkpoint(source, mmap=True), source, args.dataset, args.license)  # before work
    print(f"publishing as: {names.told}")
    folder = _export_folder(args, out)
    repo_id = args.push or args.repo_id or f"local/{Path(args.model).resolve().name}"
    facts = stage_model_repo(folder, out / "model", repo_id, dataset=names.dataset, license=names.license,
                             examples=args.examples, space_id=args.space)
    print(f"model repo staged: {out / 'model'} ({', '.join(sorted(p.name for p in (out / 'model').iterdir()))})")
    revision = args.revision
    if args.push:
        revision = push_folder(out / "model", args.push, private=args.private, api=api)
        print(f"model repo uploaded: https://huggingface.co/{args.push} (commit {revision})")
    examples = sorted(p for p in (out / "model" / EXAMPLES).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    stage_space(out / "space", facts, revision or "main", examples)
    print(f"Space staged: {out / 'space'} (serves {repo_id}@{revision or 'main'})")
    if args.space:
        commit = push_folder(out / "space", args.space, repo_type="space", private=args.private, api=api)
        print(f"Space uploaded: https://huggingface.co/spaces/{args.space} (commit {commit})")
    return 0
