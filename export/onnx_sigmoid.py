"""Every ONNX ``Sigmoid`` written as ``1 / (1 + exp(-x))``, because ONNX Runtime's CPU Sigmoid is not monotonic.

ONNX Runtime (1.31.1, CPU execution provider, every graph optimisation level) computes Sigmoid with MLAS's logistic
approximation: its error is about 1e-7 *absolute*, so below about 1e-5 the result is mostly error. sigmoid(-17.67)
comes out as 1.49e-7 (exact: 2.1e-8) while sigmoid(-16) comes out as 6.0e-8 (exact: 1.1e-7); on a dense sweep of
[-20, 0] the output decreases at 15 % of the steps. Exp is computed to float32 precision, so the formula above is as
accurate as ``torch.sigmoid`` (relative error <= 1.5e-7 wherever the result is a normal float, i.e. x > -87.3;
monotonic everywhere) at the cost of four element-wise nodes instead of one (``docs/export.md``, "What changes
inside the ONNX graph").

Where it matters: a Faster/Mask R-CNN RPN ranks its proposals for NMS by sigmoid(objectness), and a trained model's
weak proposals have logits below -12 (a quarter of the R50-FPN's candidates on the held-out image below, down to
-52). ONNX Runtime's ranking of those differs from eager's, NMS then keeps other boxes, the 1000 proposals the box
head sees differ in their tail, and detections built on the missing ones vanish (the trained R50-FPN lost 2 of 29
detections on a held-out image, OpenVINO and eager agreed).

The new nodes are named after the Sigmoid they replace (``/model/rpn/Sigmoid`` -> ``/model/rpn/Sigmoid_Exp``, ...):
same module scope, so the INT8 derivations treat them as they treated the Sigmoid (``export.int8``: an ``Add``
directly in the RPN or RoI heads is a coordinate op and stays float).
"""

from __future__ import annotations

from collections.abc import Iterator


def _subgraphs(node) -> Iterator:
    """The graphs held in ``node``'s attributes (If/Loop/Scan bodies)."""
    for attr in node.attribute:
        if attr.HasField("g"):
            yield attr.g
        yield from attr.graphs


def exact_sigmoid(graph) -> int:
    """Replace every ``Sigmoid`` node of ``graph`` (an ``onnx.GraphProto``, subgraphs included) by
    ``Reciprocal(Add(Exp(Neg(x)), CastLike(1, x)))``, in place and in the same position; returns how many. The
    graph's opset must have CastLike (15 or later: both exporters write 17 or later)."""
    taken: set[str] = set()
    node_names: set[str] = set()

    def collect(g) -> None:
        taken.update(v.name for v in (*g.input, *g.initializer))
        for n in g.node:
            taken.update((*n.input, *n.output))
            node_names.add(n.name)
            for sub in _subgraphs(n):
                collect(sub)

    collect(graph)
    return _rewrite(graph, taken, node_names)


def _fresh(base: str, used: set[str]) -> str:
    name, k = base, 0
    while name in used:
        k += 1
        name = f"{base}_{k}"
    used.add(name)
    return name


def _rewrite(graph, taken: set[str], node_names: set[str]) -> int:
    from onnx import NodeProto, TensorProto, helper

    replaced = 0
    for node in graph.node:  # subgraphs first, in place: the nodes holding them are copied below
        for sub in _subgraphs(node):
            replaced += _rewrite(sub, taken, node_names)
    rebuilt: list[NodeProto] = []
    for node in graph.node:
        if node.op_type != "Sigmoid" or node.domain not in ("", "ai.onnx"):
            kept = NodeProto()
            kept.CopyFrom(node)
            rebuilt.append(kept)
            continue
        x, y = node.input[0], node.output[0]
        base = node.name or _fresh("Sigmoid", node_names)
        one_f, one, neg, exp, denominator = (_fresh(f"{y}_{s}", taken)
                                             for s in ("one_float", "one", "neg", "exp", "denominator"))
        rebuilt += [
            helper.make_node("Constant", [], [one_f], _fresh(f"{base}_Constant", node_names),
                             value=helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])),
            helper.make_node("CastLike", [one_f, x], [one], _fresh(f"{base}_CastLike", node_names)),
            helper.make_node("Neg", [x], [neg], _fresh(f"{base}_Neg", node_names)),
            helper.make_node("Exp", [neg], [exp], _fresh(f"{base}_Exp", node_names)),
            helper.make_node("Add", [exp, one], [denominator], _fresh(f"{base}_Add", node_names)),
            helper.make_node("Reciprocal", [denominator], [y], _fresh(f"{base}_Reciprocal", node_names)),
        ]
        replaced += 1
    if len(rebuilt) != len(graph.node):
        del graph.node[:]
        graph.node.extend(rebuilt)
    return replaced


__all__ = ["exact_sigmoid"]
