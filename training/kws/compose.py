#!/usr/bin/env python3
"""One keyword-spotter file that takes the wake word's probability from one model and the other labels' from
another, both run side by side on the shared input.

    training/work/venv/bin/python training/kws/compose.py BASE.onnx WAKE.onnx out=OUT.onnx [label=hey_sigflow]

`probs` = BASE's probabilities x (1 - m) + WAKE's x m, with m the one-hot vector of the label: a per-label choice,
not a distribution any more (its values need not sum to 1), which is all the `cnn` stage's detection needs. Both
inputs must have train.py's signature (input `logmel` [1, 40, 98], output `probs` [N, 13]); an ensemble from
ensemble.py is one. evaluate.py model=BASE wake_model=WAKE scores the same choice from the two models' own runs.
The file is deterministic: the same inputs give the same bytes.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ensemble import INPUT, OUTPUT, prefixed  # noqa: E402
from words import LABELS, WAKE_WORD  # noqa: E402


def compose(base: Path, wake: Path, label: str = WAKE_WORD) -> onnx.ModelProto:
    models = [onnx.load(str(p)) for p in (base, wake)]
    for p, m in zip((base, wake), models):
        ins = [i.name for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
        outs = [o.name for o in m.graph.output]
        if ins != [INPUT] or outs != [OUTPUT]:
            sys.exit(f"compose.py: {p}: inputs {ins} and outputs {outs}; need [{INPUT!r}] and [{OUTPUT!r}]")
    if models[0].graph.input[0].type != models[1].graph.input[0].type:
        sys.exit(f"compose.py: {wake}: input type differs from {base}'s")
    if [o.version for o in models[0].opset_import] != [o.version for o in models[1].opset_import]:
        sys.exit(f"compose.py: {wake}: opset differs from {base}'s")
    nodes, inits = [], []
    for prefix, m in (("base_", models[0]), ("wake_", models[1])):
        n, i = prefixed(m.graph, prefix)
        nodes += n
        inits += i
    mask = np.zeros((1, len(LABELS)), dtype=np.float32)
    mask[0, LABELS.index(label)] = 1.0
    inits += [numpy_helper.from_array(1.0 - mask, "compose_base_mask"),
              numpy_helper.from_array(mask, "compose_wake_mask")]
    nodes += [
        helper.make_node("Mul", [f"base_{OUTPUT}", "compose_base_mask"], ["compose_base"], name="compose_base"),
        helper.make_node("Mul", [f"wake_{OUTPUT}", "compose_wake_mask"], ["compose_wake"], name="compose_wake"),
        helper.make_node("Add", ["compose_base", "compose_wake"], [OUTPUT], name="compose_add"),
    ]
    out_type = onnx.ValueInfoProto()
    out_type.CopyFrom(models[0].graph.output[0])
    graph = helper.make_graph(nodes, "kws_composed", [models[0].graph.input[0]], [out_type], initializer=inits)
    model = helper.make_model(graph, opset_imports=list(models[0].opset_import), producer_name="sigflow compose.py")
    model.ir_version = models[0].ir_version
    onnx.checker.check_model(model)
    return model


def main() -> None:
    paths, out, label = [], None, WAKE_WORD
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if eq and key == "out":
            out = Path(value)
        elif eq and key == "label":
            label = value
        elif eq:
            sys.exit(f"compose.py: bad argument {a!r}; options are out= and label=")
        else:
            paths.append(Path(a))
    if len(paths) != 2 or out is None:
        sys.exit("usage: compose.py BASE.onnx WAKE.onnx out=PATH [label=hey_sigflow]")
    if label not in LABELS:
        sys.exit(f"compose.py: label={label!r}: not one of {', '.join(LABELS)}")
    for p in paths:
        if not p.is_file():
            sys.exit(f"compose.py: {p}: no such file")
    data = compose(paths[0], paths[1], label).SerializeToString()
    out.write_bytes(data)
    print(f"wrote {out} ({len(data)} bytes; {label} from {paths[1]}, the rest from {paths[0]}), "
          f"sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
