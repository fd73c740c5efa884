#!/usr/bin/env python3
"""Check that a cached bank of train.py's clean training records (simulator version 2's, which versions 2-4 train
on) equals the records simulated now.

    training/work/venv/bin/python training/ecg/check_bank.py [cache=training/ecg/work/bank_v2_300_portable.npz] \
        [records=N] [portable=1]

Re-simulates the first N records (default: all in the cache) from train.py's seed and compares signals and R-peak
labels bit for bit, printing the first records' largest difference. With portable=1 (the default) the records are
made with the CPU-independent numerics of portable.py, as `train.py portable=1` and evaluate.py make them;
portable=0 uses the machine's own code paths, to show that they differ. ~1.4 s per record.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "portable=0" not in sys.argv[1:]:  # before numpy loads
    import portable

    portable.apply("check_bank.py")

import numpy as np  # noqa: E402

import ecgsim  # noqa: E402

USAGE = "usage: check_bank.py [cache=PATH] [records=N] [portable=0|1]"


def main() -> None:
    args = {"cache": str(Path(__file__).resolve().parent / "work" / "bank_v2_300_portable.npz"), "portable": "1"}
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if not eq or key not in ("cache", "records", "portable"):
            sys.exit(f"check_bank.py: bad argument {a!r}; {USAGE}")
        args[key] = value
    if args["portable"] not in ("0", "1"):
        sys.exit(f"check_bank.py: portable={args['portable']!r}: must be 0 or 1")
    cache = Path(args["cache"])
    if not cache.is_file():
        sys.exit(f"check_bank.py: {cache}: no such file (train.py writes it on its first run)")
    z = np.load(cache, allow_pickle=True)
    n = len(z["x"])
    try:
        n = min(n, int(args.get("records", n)))
    except ValueError:
        sys.exit(f"check_bank.py: records={args['records']!r}: not an integer; {USAGE}")
    rng = np.random.default_rng(0)  # train.py's generator of the records (seed 0 for every run)
    equal = 0
    for i in range(n):
        x, p = ecgsim.clean_record(rng, 60, version=2)
        cx, cp = np.asarray(z["x"][i]), np.asarray(z["p"][i])
        same = x.shape == cx.shape and np.array_equal(x, cx) and np.array_equal(p, cp)
        equal += same
        if i < 5:
            diff = float(np.max(np.abs(x - cx))) if x.shape == cx.shape else float("inf")
            print(f"record {i}: {'equal' if same else 'differs'} (largest difference {diff:.3g} mV)", flush=True)
    numerics = "portable" if args["portable"] == "1" else "this machine's"
    print(f"{equal} of {n} records equal {cache.name} ({numerics} numerics)")


if __name__ == "__main__":
    main()
