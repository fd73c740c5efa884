#!/usr/bin/env python3
"""What one simulated evaluation record looks like, and where a model's marks on it fall.

    training/work/venv/bin/python training/ecg/inspect_records.py [set=confirmation] [records=2,22] \
        [model=models/ecg_beats.onnx]

For each record of evaluate.py's set (first, confirmation or third, or SEED for the 40 records threshold_sweep.py's
seeds=SEED makes) it prints the heart rate and ECGSYN's P/Q/R/S/T amplitudes (ai) and widths (bi) that
ecgsim.clean_record drew, the local extrema of the median clean beat around the labelled R peaks (ms from the
label, height relative to the R), and the offsets of the model's beats that lie more than 50 ms from every label
(evaluate.py's own peak picking), with the time of each and the refractory period the picker held when it came.
Then the labels with no beat within 50 ms, outside the first and last second (which are not scored): the time of
each, the highest probability the model gave within 10 samples of where it should report it, and the offsets of the
beats within 500 ms of it. The records are the ones metrics.json (or threshold_sweep.py) scores.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as ev  # noqa: E402  (sets the portable numerics environment before numpy loads)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

import ecgsim  # noqa: E402

SETS = {"first": ev.SEED, "confirmation": ev.CONFIRMATION_SEED, "third": ev.THIRD_SEED}
HALF = 108  # samples (300 ms) either side of a label in the median beat


def main() -> None:
    args = {}
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if not eq or not value or key not in ("set", "records", "model"):
            sys.exit(f"inspect_records.py: bad argument {a!r}; options: set=first|confirmation|third|SEED "
                     "records=N,N model=PATH")
        args[key] = value
    name = args.get("set", "confirmation")
    if name not in SETS and not name.isdigit():
        sys.exit(f"inspect_records.py: set={name!r}: one of {', '.join(SETS)}, or a seed (digits)")
    seed = SETS[name] if name in SETS else int(name)
    try:
        wanted = sorted({int(v) for v in args.get("records", "2,22").split(",")})
    except ValueError:
        sys.exit(f"inspect_records.py: records={args['records']!r}: want record numbers 0-39, e.g. records=2,22")
    if not all(0 <= i < 40 for i in wanted):
        sys.exit(f"inspect_records.py: records={args['records']!r}: record numbers are 0-39")
    model = Path(args.get("model", ev.ROOT / "models/ecg_beats.onnx"))
    if not model.is_file():
        sys.exit(f"inspect_records.py: model={model}: no such file")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    draws = []  # the keyword arguments of every nk.ecg_simulate call, in order
    simulate = ecgsim.nk.ecg_simulate

    def recording(**kw):
        draws.append(kw)
        return simulate(**kw)

    ecgsim.nk.ecg_simulate = recording
    # the same draws as evaluate.simulated_records, keeping each clean record as well
    rng = np.random.default_rng(seed)
    for i in range(max(wanted) + 1):
        clean, p0 = ecgsim.clean_record(rng, 60, version=2, labels="phase")
        x, p = ecgsim.add_pvcs(rng, clean, p0, version=2)
        level = float(rng.uniform(0, 1))
        y = ecgsim.distort(rng, x, level=level)
        if i not in wanted:
            continue
        kw = draws[-1]
        print(f"{name} record {i}: {kw['heart_rate']:.1f} bpm, {kw['method']}, noise level {level:.2f}")
        if kw["method"] == "ecgsyn":
            print(f"  ai (P Q R S T) {np.round(kw['ai'], 2).tolist()}, bi {np.round(kw['bi'], 3).tolist()}")
        segs = [clean[q - HALF:q + HALF + 1] for q in p0 if q - HALF >= 0 and q + HALF < len(clean)]
        m = np.median(np.array(segs), axis=0)
        m = m / max(abs(m[HALF]), 1e-9)
        ext = [(round((j - HALF) / ecgsim.RATE * 1000), round(float(m[j]), 2)) for j in range(1, 2 * HALF)
               if (m[j] > m[j - 1] and m[j] >= m[j + 1]) or (m[j] < m[j - 1] and m[j] <= m[j + 1])]
        print(f"  median clean beat, extrema (ms from the label, height / R): {ext}")
        q = ev.probabilities(sess, y)
        det = np.asarray(ev.pick_beats(q))
        off = np.array([d - p[np.argmin(np.abs(p - d))] for d in det]) / ecgsim.RATE * 1000
        far = np.sort(off[np.abs(off) > ev.TOL / ecgsim.RATE * 1000]).round().astype(int).tolist()
        print(f"  {len(p)} labels, {len(det)} beats; beats more than 50 ms from every label, ms: {far}")
        # when each far beat came and the refractory period the picker held after the beat before it (pick_beats
        # works on the undelayed outputs: the beats shifted back by DELAY give the same intervals)
        lines = [f"{det[k] / ecgsim.RATE:.1f} s ({off[k]:+.0f} ms, period "
                 f"{ev.refractory_window(list(det[:k]), ev.REFRACTORY_RR, ev.REFRACTORY_MAX) / ecgsim.RATE * 1000:.0f} ms)"
                 for k in range(len(det)) if abs(off[k]) > ev.TOL / ecgsim.RATE * 1000]
        print(f"  far beats in time order (time, offset from the nearest label, refractory period): {', '.join(lines)}")
        missed = []
        for r in p:  # the first and last second are not scored (evaluate.match_record)
            if r < ecgsim.RATE or r >= len(y) - ecgsim.RATE or (len(det) and np.min(np.abs(det - r)) <= ev.TOL):
                continue
            top = q[max(r + ev.DELAY - 10, 0):r + ev.DELAY + 11].max(initial=0.0)
            near = det[np.abs(det - r) < ecgsim.RATE // 2] - r if len(det) else det
            missed.append(f"{r / ecgsim.RATE:.1f} s (p {top:.2f}, beats within 500 ms: "
                          f"{(near / ecgsim.RATE * 1000).round().astype(int).tolist()} ms)")
        print(f"  missed labels: {', '.join(missed) or 'none'}")


if __name__ == "__main__":
    main()
