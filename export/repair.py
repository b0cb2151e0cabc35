"""Quantisation that repairs itself: ``detdemo export ... --max-ap-drop D`` returns the quantised layers that cost
the most AP to float until the INT8 file is within D of eager fp32 on the search images.

**The drop.** On the search images, for every IoU type the model has (bbox, and segm for mask models), eager AP
minus INT8 AP; the worst type decides. A mask model whose boxes survive quantisation but whose masks do not is not
"repaired" by its boxes.

**Search images are not verdict images.** A gate the search was tuned on proves nothing, so the images that steer
the search are a seeded half of ``--data``'s split (``RepairConfig.search_fraction``, ``seed``; the other half gives
the verdict), or a separate ``--search-data``. Their names are recorded in the export manifest (``repair``), and
``check-export --data`` leaves any image of that name out of its AP gate (``leave_out_search_images``), so not even
a later check on the same data can be steered.

**openvino-int8**: NNCF's ``quantize_with_accuracy_control`` with our AP as its validation function: each candidate
IR, compiled by NNCF, runs through the host pipeline every runtime uses (``OpenVinoPredictor.from_compiled``); its
metric is 1 + the worst per-type AP delta to eager on the given images, so NNCF's absolute drop is our drop. NNCF
ranks groups of quantisers by that metric and reverts the most harmful until the drop is within D, at most
``max_iterations`` times.

**onnx-int8**: the same idea, searched here, since onnxruntime's tools have no accuracy control. Ranking every layer
by AP would cost one evaluation per layer, so a proxy ranks first: the quantisation noise each quantised tensor
carries (signal-to-quantisation-noise ratio before vs after its Q/DQ pair, and of each weight, on a few search
images: onnxruntime's ``qdq_loss_debug``). A tensor's producer and consumers go back to float together (its Q/DQ
pair sits between them). Then AP decides: the noisiest 1, 2, 4, ... go to float until the drop is within D, and a
bisection finds the fewest (``fewest``): about 2·log2(n) evaluations, calibration done once, bounded by
``RepairConfig.budget_s`` (when it runs out, the best file found is kept and the record says the limit was not
reached). The record names the module blocks touched (``group_of``: a ResNet bottleneck, a MobileNet block, an FPN
layer, a head layer) and every node.

Both record what went back to float in the file's metadata (``repair``), the manifest and ``accuracy.md``.
"""

from __future__ import annotations

import json
import math
import random
import re
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from detdemo.errors import DetDemoError

DROP_METRIC = "max over IoU types (bbox; segm for mask models) of eager AP - INT8 AP on the search images"


@dataclass(frozen=True)
class RepairConfig:
    max_drop: float
    search_fraction: float = 0.5  # of --data's images, when no --search-data is given
    seed: int = 0
    budget_s: float = 900.0  # the ONNX search stops here and keeps its best file (NNCF: max_iterations bounds it)
    proxy_images: int = 4  # search images the ONNX noise ranking runs on
    max_iterations: int = 12  # NNCF's reverting steps
    ranking_images: int = 16  # NNCF ranks its groups on at most this many of the search images


# -- the images ----------------------------------------------------------------------------------------------------


def split_indices(n: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(search, verdict) image indices: a seeded ``fraction`` of ``n`` steers the search, the rest judge it."""
    if n < 2:
        raise DetDemoError(f"--max-ap-drop needs at least 2 labelled images to split into search and verdict "
                           f"images (found {n}); give --search-data")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    k = min(n - 1, max(1, round(n * fraction)))
    return sorted(order[:k]), sorted(order[k:])


def dataset_root(dataset) -> Path:
    root = Path(dataset.root)
    return (root.parent if root.is_file() else root).resolve()


def image_names(dataset) -> list[str]:
    """Each image's name as the manifest records it: its path inside the dataset's folder."""
    root = dataset_root(dataset)
    names = []
    for rec in dataset.records:
        try:
            names.append(Path(rec.path).resolve().relative_to(root).as_posix())
        except ValueError:
            names.append(Path(rec.path).name)
    return names


def search_dataset(data: str, class_names: list[str], split: str, config: RepairConfig, separate: bool):
    """(dataset the search runs on, what the manifest records about it). ``separate``: ``data`` is a search-only
    set (--search-data), all of it used; else a seeded part of it, the rest left to the verdict."""
    from detdemo.data.layout import keep_images
    from export.accuracy import open_accuracy_data

    dataset = open_accuracy_data(data, class_names, split)
    n = len(dataset)
    if separate:
        keep, source = list(range(n)), "--search-data (all of its images)"
    else:
        keep, _ = split_indices(n, config.search_fraction, config.seed)
        source = (f"seeded {config.search_fraction:.0%} of --data's {split!r} images (seed {config.seed}); the "
                  f"other {n - len(keep)} give the verdict")
    keep_images(dataset, keep)
    return dataset, {"data": str(data), "root": str(dataset_root(dataset)), "split": split, "source": source,
                     "images": image_names(dataset)}


def leave_out_search_images(dataset, manifest: dict) -> tuple[object, int]:
    """The verdict's dataset without any image the export's repair search was steered by (the same dataset folder,
    the same name inside it); returns it and how many were left out."""
    from detdemo.data.layout import keep_images

    root = str(dataset_root(dataset))
    steered = {name for r in (manifest.get("repair") or {}).values() if isinstance(r, dict)
               and (r.get("search") or {}).get("root") == root for name in r["search"].get("images", [])}
    if not steered:
        return dataset, 0
    names = image_names(dataset)
    keep = [i for i, name in enumerate(names) if name not in steered]
    if not keep:
        raise DetDemoError("every image of this labelled split steered the export's --max-ap-drop search, so none "
                           "is left to judge it: check on other images")
    keep_images(dataset, keep)
    return dataset, len(names) - len(keep)


class SearchSet:
    """The search images, held in memory with eager's detections on them (computed once), and the drop of any
    predictor's detections, on all of them or a subset (``items``: indices)."""

    def __init__(self, dataset, reference) -> None:
        from detdemo.engine.evaluate import category_ids, dataset_to_coco

        self.images = [dataset[i][0] for i in range(len(dataset))]
        self.ids = [int(r.image_id) for r in dataset.records]
        self.class_names = dataset.class_names
        masks = bool(dataset.has_masks) and reference.predict(self.images[0]).has_masks
        self.iou_types = ("bbox", "segm") if masks else ("bbox",)
        self.gt = dataset_to_coco(dataset, with_masks=masks)
        self.cats = category_ids(dataset)
        self._sub: dict[tuple[int, ...], object] = {}
        self.reference = self.detections(reference)
        self._reference_ap: dict[tuple[int, ...], dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self.images)

    def detections(self, predictor, items=None) -> dict[int, list[dict]]:
        from detdemo.engine.evaluate import detections_to_coco

        items = range(len(self)) if items is None else items
        return {i: detections_to_coco(predictor.predict(self.images[i]), self.ids[i], self.cats) for i in items}

    def _gt(self, items: tuple[int, ...]):
        if items not in self._sub:
            import contextlib
            import io

            from pycocotools.coco import COCO

            ids = {self.ids[i] for i in items}
            gt = COCO()
            gt.dataset = {"images": [m for m in self.gt.dataset["images"] if m["id"] in ids],
                          "annotations": [a for a in self.gt.dataset["annotations"] if a["image_id"] in ids],
                          "categories": self.gt.dataset["categories"]}
            with contextlib.redirect_stdout(io.StringIO()):
                gt.createIndex()
            self._sub[items] = gt
        return self._sub[items]

    def ap(self, detections: dict[int, list[dict]], items=None) -> dict[str, float]:
        from detdemo.engine.evaluate import coco_evaluate

        items = tuple(sorted(detections if items is None else items))
        gt = self.gt if len(items) == len(self) else self._gt(items)
        results = [r for i in items for r in detections[i]]
        stats = coco_evaluate(gt, results, self.iou_types, self.class_names).stats
        return {t: stats[t]["AP"] for t in self.iou_types}

    def deltas(self, detections: dict[int, list[dict]]) -> dict[str, float]:
        """AP minus eager AP per IoU type, on the images ``detections`` covers."""
        items = tuple(sorted(detections))
        if items not in self._reference_ap:
            self._reference_ap[items] = self.ap(self.reference, items)
        got = self.ap(detections, items)
        return {t: got[t] - self._reference_ap[items][t] for t in self.iou_types}

    def drop(self, detections: dict[int, list[dict]]) -> float:
        return -min(self.deltas(detections).values())


# -- onnx-int8 -----------------------------------------------------------------------------------------------------


def group_of(node_name: str) -> str:
    """A node's block: its module path cut after the first numbered module (``layer3.2``, ``backbone.5``,
    ``mask_head.0``), or its whole module path where none is numbered (``box_head/fc6``)."""
    parts = node_name.split("/")[:-1]
    for i, part in enumerate(parts):
        if re.search(r"\.\d+$", part):
            return "/".join(parts[: i + 1])
    return "/".join(parts)


def dotted(group: str) -> str:
    """``/model/backbone/body/layer3/layer3.2`` -> ``backbone.body.layer3.2`` (the module's own dotted path)."""
    out: list[str] = []
    for part in [p for p in group.split("/") if p][1:]:  # drop the wrapper's "model"
        prev = out[-1] if out else ""
        out.append(part[len(prev) + 1:] if prev and part.startswith(prev.split(".")[-1] + ".") else part)
    return ".".join(out)


def noise_ranking(fp32: Path, qdq: Path, plan: dict, inputs: list, workdir: Path) -> list[tuple[str, float, set]]:
    """What the QDQ model quantises, noisiest first: (tensor or weight, signal-to-quantisation-noise ratio in dB,
    the quantised nodes whose return to float removes that quantisation). An activation is quantised when its
    producer or any consumer is (the Q/DQ pair sits between them), so all of those go back together; a weight goes
    with its convolution. Activations are compared before and after their Q/DQ pair in the QDQ model itself
    (onnxruntime's ``qdq_loss_debug``), one image at a time so memory stays that of one run."""
    import numpy as np
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_signal_to_quantization_noice_ratio,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    graph = onnx.load(str(fp32), load_external_data=False).graph
    quantised = set(plan["nodes"])
    adjacent: dict[str, set[str]] = {}
    for n in graph.node:
        if n.name in quantised:
            for t in (*n.input, *n.output):
                adjacent.setdefault(t, set()).add(n.name)
    augmented = workdir / "augmented.onnx"
    modify_model_output_intermediate_tensors(str(qdq), str(augmented))
    name = graph.input[0].name
    signal: dict[str, float] = {}
    noise: dict[str, float] = {}
    for x in inputs:  # sums of squares over the images: the SQNR of their concatenation
        for tensor, match in create_activation_matching(collect_activations(str(augmented), iter([{name: x}]))).items():
            pre, post = match["pre_qdq"][0].astype(np.float64), match["post_qdq"][0].astype(np.float64)
            signal[tensor] = signal.get(tensor, 0.0) + float(np.sum(pre * pre))
            noise[tensor] = noise.get(tensor, 0.0) + float(np.sum((pre - post) ** 2))
    eps = np.finfo("float").eps
    units = [(t, 10 * math.log10(max(signal[t], eps ** 2) / max(noise[t], eps ** 2)), adjacent[t])
             for t in signal if adjacent.get(t)]
    weight_of = {n.input[1]: n.name for n in graph.node if n.name in quantised and len(n.input) > 1}
    units += [(w, compute_signal_to_quantization_noice_ratio(m["float"], m["dequantized"]), {weight_of[w]})
              for w, m in create_weight_matching(str(fp32), str(qdq)).items() if w in weight_of]
    return sorted(units, key=lambda u: u[1])


def fewest(n: int, drop_at, limit: float, in_budget=lambda: True) -> int | None:
    """The smallest k in 1..n with ``drop_at(k) <= limit``, for a drop that falls as k grows: k = 1, 2, 4, ...
    until one is within the limit, then bisection below it (about 2·log2(n) calls). None when even k = n is not,
    or ``in_budget()`` turned False before one was found; once one is found, running out of budget keeps it."""
    lo, hi, k = 0, None, 1
    while n and in_budget():
        if drop_at(k) <= limit:
            hi = k
            break
        if k == n:
            return None
        lo, k = k, min(2 * k, n)
    while hi is not None and hi - lo > 1 and in_budget():
        mid = (lo + hi) // 2
        if drop_at(mid) <= limit:
            hi = mid
        else:
            lo = mid
    return hi


def _onnx_meta(path: Path) -> dict:
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return json.loads(next((p.value for p in proto.metadata_props if p.key == "detdemo"), "{}"))


def repair_onnx(folder: Path, search: SearchSet, calibration: list[Path], transform, keep_float: tuple[str, ...],
                config: RepairConfig, log=print) -> dict:
    """Return the noisiest groups of ``folder``'s model.int8.onnx to float until its drop on ``search`` is within
    ``config.max_drop``; rewrites the file (same export id) and returns the record."""
    import onnx

    from detdemo.fileio import atomic_path
    from export.formats import FORMATS
    from export.int8 import OnnxQuantizer
    from export.metadata import stamp_onnx
    from export.runtime import OnnxPredictor

    t0 = time.perf_counter()
    out = folder / FORMATS["onnx-int8"].file
    fp32 = folder / FORMATS["onnx"].file
    meta = _onnx_meta(out)
    evaluated: dict[int, float] = {}

    def evaluate(path: Path) -> float:
        return search.drop(search.detections(OnnxPredictor(path, device="cpu")))

    with tempfile.TemporaryDirectory(prefix="detdemo-repair-") as work:
        work = Path(work)
        initial = evaluate(out)
        record = {"format": "onnx-int8", "max_ap_drop": config.max_drop, "drop": DROP_METRIC,
                  "search_images": len(search), "drop_before": round(initial, 4)}
        log(f"onnx-int8: AP drop on {len(search)} search images {initial:+.4f} (limit {config.max_drop})")
        if initial <= config.max_drop:
            return {**record, "needed": False, "reached": True, "drop_after": round(initial, 4),
                    "returned_to_float": [], "returned_nodes": [], "evaluations": 1,
                    "seconds": round(time.perf_counter() - t0, 1)}
        quantizer = OnnxQuantizer(fp32, calibration, transform, keep_float, work)
        inputs = [_graph_input(image, transform) for image in search.images[: config.proxy_images]]
        ranking = noise_ranking(quantizer.prepared, out, quantizer.plan, inputs, work)
        log(f"onnx-int8: {len(ranking)} quantised tensors ranked by quantisation noise "
            f"({time.perf_counter() - t0:.0f} s); returning the noisiest to float")

        steps: list[tuple[int, tuple[str, ...]]] = []  # (tensors taken, nodes in float): only where the set grows
        taken: set[str] = set()
        for i, (_, _, nodes) in enumerate(ranking, start=1):
            if not nodes <= taken:
                taken |= nodes
                steps.append((i, tuple(sorted(taken))))

        def nodes_for(k: int) -> tuple[str, ...]:
            return steps[k - 1][1] if k else ()

        def write(path: Path, k: int, final: bool = False) -> dict:
            info = quantizer.write(path, nodes_for(k), count_fused=final)
            proto = onnx.load(str(path))
            stamp_onnx(proto, {**meta, **info})  # the file's own metadata: what the runtime reads
            onnx.save(proto, str(path))
            return info

        def attempt(k: int) -> float:
            if k not in evaluated:
                candidate = work / f"k{k}.onnx"
                write(candidate, k)
                evaluated[k] = evaluate(candidate)
                candidate.unlink()
                log(f"onnx-int8: the {steps[k - 1][0]} noisiest tensor(s) in float ({len(nodes_for(k))} nodes): "
                    f"drop {evaluated[k]:+.4f}")
            return evaluated[k]

        def in_budget() -> bool:
            return time.perf_counter() - t0 < config.budget_s

        evaluated[0] = initial
        hi = fewest(len(steps), attempt, config.max_drop, in_budget)
        reached = hi is not None
        best = hi if reached else min(evaluated, key=evaluated.get)
        info = write(work / "final.onnx", best, final=True)
        returned = nodes_for(best)
        record.update({"needed": True, "reached": reached, "drop_after": round(evaluated[best], 4),
                       "returned_to_float": sorted({dotted(group_of(n)) for n in returned}),
                       "returned_nodes": list(returned), "quantised_nodes_before": len(quantizer.plan["nodes"]),
                       "noisiest_tensors_db": {t: round(db, 1) for t, db, _ in
                                               ranking[: max(steps[best - 1][0] if best else 0, 8)]},
                       "evaluations": len(evaluated), "budget_s": config.budget_s,
                       "seconds": round(time.perf_counter() - t0, 1)})
        proto = onnx.load(str(work / "final.onnx"))
        stamp_onnx(proto, {**meta, **info, "repair": record})
        with atomic_path(out) as tmp:
            onnx.save(proto, str(tmp))
    return record


def _graph_input(image, transform):
    """One image as the graph's input (normalised and resized by the host pipeline's own transform)."""
    import torch

    from detdemo.inference.pipeline import to_chw_float

    with torch.inference_mode():
        x, _ = transform.resize(transform.normalize(to_chw_float(image)), None)
    return x.numpy()


# -- openvino-int8 -------------------------------------------------------------------------------------------------


COMPUTED_IN_INT8 = ("Convolution", "GroupConvolution", "MatMul", "Add", "Multiply")


def _quantised_ops(model) -> set[str]:
    """Ops of an NNCF-quantised IR whose activation input is FakeQuantize'd, by their ONNX node name (weights are
    left out: NNCF compresses their FakeQuantize into int8 constants at the end, after the intermediate model)."""
    names = set()
    for op in model.get_ops():
        if op.get_type_name() == "FakeQuantize" and op.input_value(0).get_node().get_type_name() != "Constant":
            for out in op.outputs():
                names.update(t.get_node().get_friendly_name().removesuffix("/WithoutBiases")
                             for t in out.get_target_inputs() if t.get_node().get_type_name() in COMPUTED_IN_INT8)
    return names


def repair_openvino(folder: Path, search: SearchSet, calibration: list[Path], transform,
                    keep_float: tuple[str, ...], config: RepairConfig, log=print) -> dict:
    """``folder``'s model.int8.xml quantised again with NNCF's accuracy control against our AP; rewrites it."""
    from export.formats import FORMATS
    from export.int8 import nncf_errors, nncf_module, openvino_calibration, openvino_ignored_scope, openvino_settings
    from export.metadata import dumps
    from export.openvino_ir import RT_INFO_KEY, convert_onnx, openvino_module
    from export.openvino_ir import export_openvino as save
    from export.openvino_runtime import OpenVinoPredictor, compile_config, cpu_supports_bf16

    nncf, ov = nncf_module(), openvino_module()
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    t0 = time.perf_counter()
    out = folder / FORMATS["openvino-int8"].file
    core = ov.Core()
    meta = json.loads(core.read_model(str(out)).get_rt_info([RT_INFO_KEY]).astype(str))
    runs = compile_config("bf16" if cpu_supports_bf16(core) else "fp32")  # its float layers, as the runtime runs it
    inputs = openvino_calibration(calibration, transform)
    calls = {"n": 0}

    def metric(detections: dict[int, list[dict]]) -> float:
        """1 + the worst per-type AP delta to eager (1 for a faithful model: NNCF divides by the original's
        metric, so it must not be 0; its absolute drop is our drop)."""
        return 1.0 + min(search.deltas(detections).values())

    def validate(compiled, items):
        """NNCF's validation function: our metric on these images, and per image when they are all of them (what
        NNCF picks its ranking images by; computed from the same detections, not by running each image again)."""
        calls["n"] += 1
        detections = search.detections(OpenVinoPredictor.from_compiled(compiled, meta, "int8"), list(items))
        per_image = [metric({i: d}) for i, d in detections.items()] if len(detections) == len(search) else None
        return metric(detections), per_image

    with tempfile.TemporaryDirectory(prefix="detdemo-repair-") as work, nncf_errors():
        restorer = AdvancedAccuracyRestorerParameters(
            max_num_iterations=config.max_iterations, ranking_subset_size=min(len(search), config.ranking_images),
            num_ranking_workers=1, intermediate_model_dir=work)
        quantized = nncf.quantize_with_accuracy_control(
            convert_onnx(folder / FORMATS["onnx"].file), nncf.Dataset(inputs), nncf.Dataset(list(range(len(search)))),
            validate, max_drop=config.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(inputs),
            ignored_scope=openvino_ignored_scope(keep_float), advanced_accuracy_restorer_parameters=restorer)
        first = core.read_model(str(Path(work) / "intermediate_model.xml"))
        ov.save_model(quantized, str(Path(work) / "repaired.xml"), compress_to_fp16=False)
        returned = sorted(_quantised_ops(first) - _quantised_ops(core.read_model(str(Path(work) / "repaired.xml"))))
        before = 1.0 - validate(core.compile_model(first, "CPU", runs), range(len(search)))[0]
    after = 1.0 - validate(core.compile_model(quantized, "CPU", runs), range(len(search)))[0]
    record = {"format": "openvino-int8", "max_ap_drop": config.max_drop, "drop": DROP_METRIC,
              "method": f"nncf.quantize_with_accuracy_control {nncf.__version__}, drop_type ABSOLUTE",
              "note": "NNCF validates its candidates with fp32 float layers; drop_before/after are measured as the "
                      "file runs (float layers in bf16 where the CPU has it)",
              "search_images": len(search), "drop_before": round(before, 4), "drop_after": round(after, 4),
              "needed": before > config.max_drop, "reached": after <= config.max_drop,
              "returned_to_float": sorted({dotted(group_of(n)) for n in returned}), "returned_nodes": returned,
              "evaluations": calls["n"], "max_iterations": config.max_iterations,
              "seconds": round(time.perf_counter() - t0, 1)}
    log(f"openvino-int8: AP drop on {len(search)} search images {before:+.4f} -> {after:+.4f} "
        f"(limit {config.max_drop}); {len(returned)} op(s) returned to float")
    info = {"quantization": {**openvino_settings(calibration, keep_float, len(inputs)),
                             "method": record["method"], "returned_to_float": returned}}
    save(quantized, out, dumps({**meta, **info, "repair": record}))
    return record


# -- the whole folder ----------------------------------------------------------------------------------------------

REPAIRERS = {"onnx-int8": repair_onnx, "openvino-int8": repair_openvino}


def repair_folder(folder: str | Path, formats: tuple[str, ...], search_data, search_info: dict,
                  calibration: list[Path], config: RepairConfig, log=print) -> dict:
    """Repair each INT8 file of ``formats`` in ``folder`` against the search images and record it all in the
    manifest (``repair``: per format, with the search images' names)."""
    from detdemo.fileio import write_json
    from detdemo.models import get_spec
    from export.formats import EAGER_FILE, MANIFEST
    from export.manifest import read_manifest
    from export.runtime import load_predictor

    folder = Path(folder)
    reference = load_predictor(folder / EAGER_FILE, "pytorch", "cpu")
    search = SearchSet(search_data, reference)
    manifest = read_manifest(folder) or {}
    keep_float = get_spec(manifest["arch"]).family_info.keep_float
    records = {}
    for fmt in (f for f in REPAIRERS if f in formats):
        record = REPAIRERS[fmt](folder, search, calibration, reference.transform, keep_float, config, log)
        records[fmt] = {**record, "search": search_info, "config": asdict(config)}
    manifest["repair"] = {**(manifest.get("repair") or {}), **records}
    write_json(folder / MANIFEST, manifest)
    return records


def markdown_section(manifest: dict, left_out: int = 0) -> str:
    """accuracy.md's section on the repair (appended after the gate's table; empty when nothing was repaired)."""
    repairs = {k: v for k, v in (manifest.get("repair") or {}).items() if isinstance(v, dict)}
    if not repairs and not left_out:
        return ""
    lines = ["", "## Quantisation repaired by --max-ap-drop", "", f"Drop: {DROP_METRIC}.", ""]
    if left_out:
        lines += [f"{left_out} image(s) of this split steered the repair search and were left out of the gate "
                  "above: a gate the search was tuned on proves nothing.", ""]
    for fmt, r in repairs.items():
        search = r.get("search") or {}
        state = "within the limit" if r.get("reached") else "**not within the limit** (best file kept)"
        lines.append(f"- **{fmt}**: drop {r.get('drop_before', 0):+.4f} -> "
                     f"{r.get('drop_after', 0):+.4f} on {r.get('search_images')} search images "
                     f"({search.get('source', '')}), limit {r.get('max_ap_drop')}: {state}; "
                     f"{r.get('evaluations')} evaluations, {r.get('seconds')} s.")
        returned = r.get("returned_to_float") or []
        lines.append(f"  Returned to float: {', '.join(f'`{g}`' for g in returned) if returned else 'nothing'}.")
    return "\n".join(lines) + "\n"


__all__ = ["RepairConfig", "SearchSet", "group_of", "leave_out_search_images", "markdown_section", "repair_folder",
           "search_dataset", "split_indices"]
