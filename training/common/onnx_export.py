"""ONNX export helpers shared by the training scripts: fold the exporter's Pad nodes into the Conv nodes that
consume them, so causal convolutions appear as plain Conv nodes with asymmetric pads [left, 0]."""
from pathlib import Path

import numpy as np


def fold_pads(path: Path) -> None:
    """Fold each Pad node (constant zero, time axis only) into the Conv that consumes it, so the graph has only
    Conv nodes with explicit asymmetric pads [left, 0]."""
    import onnx
    from onnx import numpy_helper

    from onnx.reference import ReferenceEvaluator

    m = onnx.load(str(path))
    g = m.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    # Evaluate every node computed from constants only (the exporter spells each pad amount as a small subgraph).
    for n in g.node:
        if n.op_type == "Pad" or not all(i in consts for i in n.input if i):
            continue
        outs = ReferenceEvaluator(n).run(None, {i: consts[i] for i in n.input if i})
        consts.update(zip(n.output, outs))
    pads = {}
    for n in list(g.node):
        if n.op_type != "Pad":
            continue
        pv = consts[n.input[1]].tolist()
        mode = [a.s.decode() for a in n.attribute if a.name == "mode"]
        assert not mode or mode[0] == "constant", mode
        if len(n.input) > 2 and n.input[2]:
            assert float(np.asarray(consts[n.input[2]]).reshape(-1)[0]) == 0.0
        rank = len(pv) // 2
        left, right = pv[:rank], pv[rank:]
        assert left[:-1] == [0] * (rank - 1) and right == [0] * rank, pv
        pads[n.output[0]] = (n.input[0], left[-1])
        g.node.remove(n)
    for n in g.node:
        if n.op_type == "Conv" and n.input[0] in pads:
            src, left = pads.pop(n.input[0])
            n.input[0] = src
            for a in list(n.attribute):
                if a.name in ("pads", "auto_pad"):
                    n.attribute.remove(a)
            n.attribute.append(onnx.helper.make_attribute("pads", [left, 0]))
    assert not pads, f"Pad nodes not followed by Conv: {list(pads)}"
    while True:
        used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    for i in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(i)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
