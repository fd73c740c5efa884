#!/usr/bin/env python3
"""Average the class probabilities of several keyword-spotter models in one ONNX file.

    training/work/venv/bin/python training/kws/ensemble.py A.onnx B.onnx [...] out=models/kws.onnx
    training/work/venv/bin/python training/kws/ensemble.py A.onnx B.onnx input=ecg output=beat out=E.onnx

Every member must have the signature train.py exports (input `logmel` [1, 40, 98], output `probs` [N, 13]). The
result has the same signature: the members run side by side on the shared input (their node, tensor and
initializer names get the prefixes m0_, m1_, ...) and `probs` is the mean of their softmax outputs, so it is still
a probability distribution and still a causal stack of convolutions that the `cnn` stage streams exactly. The
file is deterministic: the same members give the same bytes.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

INPUT = "logmel"
OUTPUT = "probs"


def prefixed(graph: onnx.GraphProto, prefix: str, shared: str = INPUT) -> tuple[list, list]:
    """The graph's nodes and initializers with every name except the shared input prefixed."""
    def rename(name: str) -> str:
        return name if name in ("", shared) else prefix + name

    nodes = []
    for n in graph.node:
        m = onnx.NodeProto()
        m.CopyFrom(n)
        m.name = prefix + (n.name or n.op_type)
        m.input[:] = [rename(i) for i in n.input]
        m.output[:] = [rename(o) for o in n.output]
        nodes.append(m)
    inits = []
    for t in graph.initializer:
        u = onnx.TensorProto()
        u.CopyFrom(t)
        u.name = rename(t.name)
        inits.append(u)
    return nodes, inits


def ensemble(paths: list[Path], input_name: str = INPUT, output_name: str = OUTPUT,
             graph_name: str = "kws_ensemble") -> onnx.ModelProto:
    """Members with one input `input_name` and one output `output_name` (train.py's names by default); the output
    of the result is the mean of theirs."""
    members = [onnx.load(str(p)) for p in paths]
    first = members[0]
    for p, m in zip(paths, members):
        ins = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
        outs = [o.name for o in m.graph.output]
        if ins != [input_name] or outs != [output_name]:
            sys.exit(f"ensemble: {p}: inputs {ins} and outputs {outs}; need [{input_name!r}] and [{output_name!r}]")
        if m.graph.input[0].type != first.graph.input[0].type:
            sys.exit(f"ensemble: {p}: input type differs from {paths[0]}'s")
        if [o.version for o in m.opset_import] != [o.version for o in first.opset_import]:
            sys.exit(f"ensemble: {p}: opset differs from {paths[0]}'s")
    nodes, inits = [], []
    for k, m in enumerate(members):
        n, i = prefixed(m.graph, f"m{k}_", input_name)
        nodes += n
        inits += i
    total = f"m0_{output_name}"
    for k in range(1, len(members)):
        nodes.append(helper.make_node("Add", [total, f"m{k}_{output_name}"], [f"sum{k}"], name=f"ensemble_add{k}"))
        total = f"sum{k}"
    inits.append(numpy_helper.from_array(np.array(1.0 / len(members), dtype=np.float32), "ensemble_scale"))
    nodes.append(helper.make_node("Mul", [total, "ensemble_scale"], [output_name], name="ensemble_mean"))
    out_type = onnx.ValueInfoProto()
    out_type.CopyFrom(first.graph.output[0])
    graph = helper.make_graph(nodes, graph_name, [first.graph.input[0]], [out_type], initializer=inits)
    model = helper.make_model(graph, opset_imports=list(first.opset_import), producer_name="sigflow ensemble.py")
    model.ir_version = first.ir_version
    onnx.checker.check_model(model)
    return model


def main() -> None:
    paths, out, names = [], None, {"input": INPUT, "output": OUTPUT}
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if eq and key == "out":
            out = Path(value)
        elif eq and key in names:
            names[key] = value
        else:
            paths.append(Path(a))
    if len(paths) < 2 or out is None:
        sys.exit("usage: ensemble.py A.onnx B.onnx [...] [input=NAME output=NAME] out=PATH")
    for p in paths:
        if not p.is_file():
            sys.exit(f"ensemble.py: {p}: no such file")
    model = ensemble(paths, names["input"], names["output"],
                     "kws_ensemble" if names["input"] == INPUT else f"{names['input']}_ensemble")
    data = model.SerializeToString()
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes, {len(paths)} members), sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
