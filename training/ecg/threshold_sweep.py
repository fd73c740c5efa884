#!/usr/bin/env python3
"""Sensitivity and PPV of ECG beat models over a range of peak-picking thresholds, on the records of evaluate.py.

    training/work/venv/bin/python training/ecg/threshold_sweep.py MODEL[:DELAY] ... \
        [thresholds=0.2,0.3,0.4,0.5,0.6,0.7] [refractory=200,0.25:300,0.3:300:median,...] [seeds=N,...] \
        [out=training/ecg/work/threshold_sweep.json]

Each MODEL is an ONNX file with evaluate.py's signature (input `ecg`, output `beat`, receptive field 1023); DELAY
is the samples it reports a beat late (default 72). evaluate.py's three simulated sets (first, confirmation and
third; `seeds=` adds sets of 40 records made the same way from other seeds) and the MIT-BIH 208 excerpt are made
once and scored for every model, threshold and refractory period with evaluate.py's own peak picking and matching
(50 ms). `refractory=` is a list of whole ms, or F:MAX_MS for F x the recent mean RR interval within 200 ms-MAX_MS
(F:MAX_MS:median for the median interval; default 0.3:300, evaluate.py's and the stages'; 200 is the fixed period
used until 2026-12-07). The JSON keeps the per-record counts as well, so that the records a model misses at one
setting can be looked up at another, each record's R amplitude (mV above its median) and each model's median peak
probability per record; records where that median is under 0.5 are printed. evaluate.py sets the portable numerics
before numpy loads; importing it first keeps these records identical to the ones its metrics come from (the printed
records_sha256 are those of metrics.json).
"""
from __future__ import annotations

import functools
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evaluate as ev  # noqa: E402  (sets the portable numerics environment before numpy loads)

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
import soundfile as sf  # noqa: E402

import ecgsim  # noqa: E402

USAGE = ("usage: threshold_sweep.py MODEL[:DELAY] ... [thresholds=T,T,...] [refractory=MS|F:MAX_MS[:median],...] "
         "[seeds=N,...] [out=PATH]")


def per_record(beats: list[np.ndarray], sets: list[tuple[np.ndarray, np.ndarray]]) -> list[list[int]]:
    """(tp, fn, fp) of each record, as evaluate.simulated counts them."""
    return [list(ev.match_record(len(y), p, det)) for det, (y, p) in zip(beats, sets)]


def r_amplitude(y: np.ndarray, p: np.ndarray) -> float:
    """Median height of a record's labelled R peaks above its median (mV): its gain times its R wave's size."""
    return float(np.median(y[p]) - np.median(y)) if len(p) else 0.0


def peak_probability(q: np.ndarray, p: np.ndarray, delay: int, n: int) -> float:
    """Median over a record's labelled beats of the highest probability within ±10 samples of where the model
    should report each (delay samples after it)."""
    tops = [q[max(k + delay - 10, 0):k + delay + 11].max() for k in p if k + delay + 11 <= n]
    return float(np.median(tops)) if tops else 0.0


def refractory_setting(text: str) -> tuple[str, int, float, int, str]:
    """A `refractory=` entry: "MS" (a fixed period) or "F:MAX_MS[:median]" (F x the recent mean, or median, RR
    interval, between 200 ms and MAX_MS; evaluate.pick_beats' refractory_rr, refractory_max and refractory_stat)
    -> (label, fixed samples, F, max samples, statistic)."""
    f, colon, rest = text.partition(":")
    top, _, stat = rest.partition(":")
    ms_to_samples = ecgsim.RATE / 1000
    if colon:
        rr, top_ms = float(f), int(top)
        if not (0 < rr < 1 and 200 <= top_ms <= 1000) or stat not in ("", "mean", "median"):
            raise ValueError(text)
        return text, int(200 * ms_to_samples), rr, int(top_ms * ms_to_samples), stat or "mean"
    ms = int(f)
    if not 50 <= ms <= 1000:
        raise ValueError(text)
    return text, int(ms * ms_to_samples), 0.0, 0, "mean"


def main() -> None:
    models: list[tuple[Path, int]] = []
    thresholds = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    refractories = [refractory_setting(f"{ev.REFRACTORY_RR}:{round(ev.REFRACTORY_MAX * 1000 / ecgsim.RATE)}")]
    extra_seeds: list[int] = []
    out_path = Path(__file__).resolve().parent / "work" / "threshold_sweep.json"
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if eq and key == "thresholds":
            try:
                thresholds = [float(t) for t in value.split(",")]
            except ValueError:
                sys.exit(f"threshold_sweep.py: thresholds={value!r}: not a list of numbers; {USAGE}")
            if not all(0 < t < 1 for t in thresholds):
                sys.exit("threshold_sweep.py: thresholds must lie in (0, 1)")
        elif eq and key == "refractory":
            try:
                refractories = [refractory_setting(r) for r in value.split(",")]
            except ValueError:
                sys.exit(f"threshold_sweep.py: refractory={value!r}: each entry must be MS, F:MAX_MS or F:MAX_MS:median; {USAGE}")
        elif eq and key == "seeds":
            try:
                extra_seeds = [int(v) for v in value.split(",")]
            except ValueError:
                sys.exit(f"threshold_sweep.py: seeds={value!r}: not a list of integers; {USAGE}")
        elif eq and key == "out":
            out_path = Path(value)
        elif eq:
            sys.exit(f"threshold_sweep.py: bad argument {a!r}; {USAGE}")
        else:
            path, _, delay = a.partition(":")
            try:
                d = int(delay) if delay else 72
            except ValueError:
                sys.exit(f"threshold_sweep.py: {a!r}: DELAY must be an integer; {USAGE}")
            if not Path(path).is_file():
                sys.exit(f"threshold_sweep.py: model {path}: no such file")
            models.append((Path(path), d))
    if not models:
        sys.exit(USAGE)
    sets = {name: [(y, p) for y, p, _ in ev.simulated_records(seed)]
            for name, seed in [("first", ev.SEED), ("confirmation", ev.CONFIRMATION_SEED), ("third", ev.THIRD_SEED)]
            + [(f"seed{s}", s) for s in extra_seeds]}
    digests = {}
    for name, recs in sets.items():  # as evaluate.simulated's records_sha256, to show these are its records
        h = hashlib.sha256()
        for y, p in recs:
            ev.records_digest(h, y, p)
        digests[name] = h.hexdigest()
        print(f"{name} set: {sum(len(p) for _, p in recs)} labelled beats, records_sha256 {digests[name]}")
    import neurokit2 as nk

    x208, rate = sf.read(str(ev.ROOT / "audio/mitbih208_excerpt.wav"), dtype="float32")
    _, a = nk.ecg_peaks(nk.ecg_clean(x208, sampling_rate=rate, method="neurokit"), sampling_rate=rate,
                        method="neurokit")
    nk208 = np.asarray(a["ECG_R_Peaks"], dtype=np.int64)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    result = {"thresholds": thresholds, "refractory": [r[0] for r in refractories], "tolerance_ms": 50,
              "records_sha256": digests,
              "r_amplitude_mv": {name: [round(r_amplitude(y, p), 3) for y, p in recs] for name, recs in sets.items()},
              "models": {}}
    print(f"{'model':40s} {'thr':>4s} {'refr':>8s}  "
          + "  ".join(f"{name + ' sens/PPV (fn, fp)':>30s}" for name in sets) + f"  {'208 vs nk sens/PPV':>18s}")
    for path, delay in models:
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        probs = {name: [ev.probabilities(sess, y) for y, _ in recs] for name, recs in sets.items()}
        p208 = ev.probabilities(sess, x208)
        ev.DELAY = delay
        entry = {"delay": delay,
                 "peak_probability": {name: [round(peak_probability(q, p, delay, len(y)), 3)
                                             for q, (y, p) in zip(probs[name], recs)]
                                      for name, recs in sets.items()}}
        entry["by_refractory"] = {}
        for label, fixed, rr, top, stat in refractories:
            ev.REFRACTORY = fixed
            pick = functools.partial(ev.pick_beats, refractory_rr=rr, refractory_max=top, refractory_stat=stat)
            by_t = entry["by_refractory"].setdefault(label, {})
            for t in thresholds:
                ev.THRESHOLD = t
                row = {}
                for name, recs in sets.items():
                    counts = per_record([pick(q) for q in probs[name]], recs)
                    row[name] = {**ev.scores(*np.sum(counts, axis=0)), "per_record": counts}
                row["mitbih208_vs_neurokit"] = ev.scores(*ev.match(nk208, pick(p208)))
                by_t[str(t)] = row
                m = row["mitbih208_vs_neurokit"]
                print(f"{str(path):40s} {t:4.2f} {label:>8s}  "
                      + "  ".join(f"{'':11s}{row[n]['sensitivity']:.4f}/{row[n]['ppv']:.4f} ({row[n]['fn']:3d}, "
                                  f"{row[n]['fp']:3d})" for n in sets)
                      + f"  {'':7s}{m['sensitivity']:.3f}/{m['ppv']:.3f}", flush=True)
        for name, recs in sets.items():  # where a model fails on whole records: their size and its confidence
            amp, top = result["r_amplitude_mv"][name], entry["peak_probability"][name]
            weak = [f"{i} (R {amp[i]:+.2f} mV, p {v:.2f})" for i, v in enumerate(top) if v < 0.5]
            print(f"    {name} records whose median peak probability is under 0.5: {', '.join(weak) or 'none'}")
        result["models"][str(path)] = entry
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
