#!/usr/bin/env python3
"""How the R-peak labels of ECGSYN's phase (evaluate.py's, since 2026-12-07) compare with those of the detector on
the clean signal (ecgsim.r_peaks_of_clean, train.py's and evaluate.py's before), record by record.

    training/work/venv/bin/python training/ecg/compare_labels.py [seeds=20261126,20261203,20261207,20261208,20261209]
    training/work/venv/bin/python training/ecg/compare_labels.py banks=DETECTOR.npz,PHASE.npz

banks= compares the labels of two of train.py's record caches instead (e.g. training/ecg/work/bank_v2_900_portable.npz
and bank_v2_900_portable_phase.npz), whole records, edges included.

For each seed (a set of evaluate.py: 40 records of 60 s) every clean record is made twice from the same generator
state, with either labelling, and the set goes on with the phase labels, as evaluate.simulated_records does; labels in
a record's first and last second (which the scoring ignores) are left out. It prints per set the labels that agree
to the sample, those moved by 1-50 ms, and those of one labelling with no label of the other within 50 ms, and per
record where they differ. For a detector label with no phase R near it, the record's line gives the signal's
sharpness there (minus its second difference) against the median at the record's phase labels, and the distance to
the nearest phase R: a blunt hump well before an R is a P wave taken for the R.
"""
from __future__ import annotations

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as ev  # noqa: E402  (sets the portable numerics environment before numpy loads)

import numpy as np  # noqa: E402

import ecgsim  # noqa: E402

DEFAULT_SEEDS = [ev.SEED, ev.CONFIRMATION_SEED, ev.THIRD_SEED, 20261208, 20261209]


def sharpness(x: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Minus the second difference of x at the given samples (large at a narrow peak, small on a broad hump)."""
    at = np.clip(at, 1, len(x) - 2)
    return -(x[at + 1] - 2 * x[at] + x[at - 1])


def label_counts(pa: np.ndarray, pb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(same, moved 1-50 ms, detector only, phase only) for detector labels pa and phase labels pb, and the detector
    labels with no phase label within 50 ms."""
    same = int(np.isin(pa, pb).sum())
    det_only = np.array([q for q in pa if not len(pb) or np.min(np.abs(pb - q)) > ev.TOL], dtype=np.int64)
    phase_only = sum(1 for q in pb if not len(pa) or np.min(np.abs(pa - q)) > ev.TOL)
    return np.array([same, len(pa) - same - len(det_only), len(det_only), phase_only]), det_only


def compare_banks(detector: Path, phase: Path) -> None:
    """Label counts of two train.py record caches made with labels=detector and labels=phase."""
    a, b = (np.load(f, allow_pickle=True)["p"] for f in (detector, phase))
    if len(a) != len(b):
        sys.exit(f"compare_labels.py: {detector} has {len(a)} records, {phase} {len(b)}")
    counts = np.zeros(4, dtype=int)
    differ = empty = 0
    for pa, pb in zip(a, b):
        pa, pb = np.asarray(pa), np.asarray(pb)
        c, _ = label_counts(pa, pb)
        counts += c
        differ += int(c[1:].any())
        empty += int(len(pa) == 0 and len(pb) > 0)
    print(f"{len(a)} records, {differ} with other labels, {empty} without a detector label: same {counts[0]}, "
          f"moved 1-50 ms {counts[1]}, detector only {counts[2]}, phase only {counts[3]}")


def main() -> None:
    seeds = DEFAULT_SEEDS
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if key == "banks" and eq:
            files = [Path(f) for f in value.split(",")]
            if len(files) != 2 or not all(f.is_file() for f in files):
                sys.exit(f"compare_labels.py: banks={value!r}: want two existing .npz files, DETECTOR,PHASE")
            compare_banks(*files)
            return
        if key != "seeds" or not eq:
            sys.exit(f"compare_labels.py: bad argument {a!r}; usage: compare_labels.py [seeds=N,N,...] | "
                     "banks=DETECTOR.npz,PHASE.npz")
        try:
            seeds = [int(v) for v in value.split(",")]
        except ValueError:
            sys.exit(f"compare_labels.py: seeds={value!r}: want integers, e.g. seeds=20261126,20261203")
    totals = np.zeros(4, dtype=int)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        counts = np.zeros(4, dtype=int)  # same, moved 1-50 ms, detector only, phase only
        lines = []
        for i in range(40):
            xd, pd = ecgsim.clean_record(copy.deepcopy(rng), 60, version=2)
            x, p = ecgsim.clean_record(rng, 60, version=2, labels="phase")
            n = len(x)
            a = pd[(pd >= ecgsim.RATE) & (pd < n - ecgsim.RATE)]
            b = p[(p >= ecgsim.RATE) & (p < n - ecgsim.RATE)]
            c, det_only = label_counts(a, b)
            counts += c
            if c[1:].any():
                line = (f"  record {i}: {len(a)} detector labels, {len(b)} phase labels; moved {c[1]}, "
                        f"detector only {c[2]}, phase only {c[3]}")
                if len(det_only) and len(b):
                    sh = np.median(sharpness(xd, det_only)) / max(float(np.median(sharpness(xd, p))), 1e-12)
                    # offsets from each detector-only label to the nearest phase R (in xd's samples; both share them)
                    off = [int(b[np.argmin(np.abs(b - q))] - q) for q in det_only]
                    line += (f"; at the detector-only labels the sharpness is {sh:.2f}x the record's median and the "
                             f"nearest phase R lies {min(off) / ecgsim.RATE * 1000:.0f} to "
                             f"{max(off) / ecgsim.RATE * 1000:.0f} ms away")
                lines.append(line)
            x, p = ecgsim.add_pvcs(rng, x, p, version=2)
            level = float(rng.uniform(0, 1))
            ecgsim.distort(rng, x, level=level)
        totals += counts
        print(f"seed {seed}: same {counts[0]}, moved 1-50 ms {counts[1]}, detector only {counts[2]}, "
              f"phase only {counts[3]}", flush=True)
        for line in lines:
            print(line, flush=True)
    print(f"all: same {totals[0]}, moved 1-50 ms {totals[1]}, detector only {totals[2]}, phase only {totals[3]}")


if __name__ == "__main__":
    main()
