#!/usr/bin/env python3
"""Train the ECG beat detector and export models/ecg_beats.onnx.

    training/work/venv/bin/python training/ecg/train.py delay=72 seed=0 gain=0.2,4 portable=1 records=900 \
        labels=phase focus=0.5        # the bundled model's run: 4200 steps x 16 windows, ~16 min on 2 cores

The model is a causal, fully convolutional 1-D CNN over the raw lead in mV at 360 Hz: input [1, 1, T], output
[1, 1, T], the probability that an R peak happened DELAY (72) samples, 200 ms, earlier. Dilated causal convolutions
(left padding only, folded into each Conv node's pads) give a receptive field of 1023 samples (2.84 s), so a
streaming engine reproduces the full-window output exactly. Training data: 300 simulated clean records of 60 s with
exact labels (ecgsim.py), freshly augmented for every window: simulator v4 (half of the windows get reshaped T waves),
PVCs drawn as v2 or v3 per window, and a 4x loss weight on T-wave regions. Seeds are fixed; see requirements.txt for
the pinned versions. Without options the run is the recipe of the model bundled until 2026-12-08 (300 records, on
the kind of machine it was made on: see models/ecg_beats.md, *Reproducibility across machines*); the bundled model
now comes from the command above. portable=1 makes the simulated records and augmentation with evaluate.py's
CPU-independent numerics (portable.py; its own record cache), so that they are the same on every x86-64 machine;
PyTorch's numerics still depend on the CPU. labels=phase takes the clean records' R peaks from ECGSYN's phase, as
evaluate.py does since 2026-12-07, instead of the detector's (its own record cache as well). focus=F draws a share F
of the windows from records weighted by the square root of their running loss (RecordFocus).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
if "portable=1" in sys.argv[1:]:  # before numpy loads (see main)
    import portable

    portable.apply("train.py")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import ecgsim  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "common"))
from onnx_export import fold_pads  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORK = Path(__file__).resolve().parent / "work"
DELAY = 72          # samples (200 ms) of look-ahead the causal model gets before it reports a beat
HALF_WIDTH = 4      # label is 1 within ±4 samples (±11 ms) of the R peak
WINDOW = 4096       # 11.4 s training windows
CHANNELS = 24
BATCH = 16
MIX = False
DILATIONS = (2, 4, 8, 16, 32, 64, 128)
RECEPTIVE_FIELD = 1 + 6 + sum(4 * d for d in DILATIONS)  # 1023 samples (2.84 s)
HIGH_NOISE_SHARE = 0.0
PVC_WINDOWS = None  # None: half of the windows get PVCs, drawn as simulator version 1 drew them
SIM = 4  # simulator version of the training records (see ecgsim.py)
T_SHARE = 0.5  # sim=4: share of the windows whose T waves ecgsim.reshape_t_waves replaces (208-like T waves)
T_SEED = 4  # sim=4: seed of reshape_t_waves' own generator (the other draws stay those of sim=3)
T_WEIGHT = 4.0  # loss weight of label-0 samples in each beat's T-wave region (1: plain loss)
LOG_GAIN = None  # gain of the training windows: None as the evaluation draws it (uniform 0.3-3), or (low, high)
PVCS = 0  # PVC drawing of the training windows: None (as the simulator version SIM), 2, 3, or 0 (each window v2 or v3)
T_REGION = (0.10, 0.45)  # s after an R peak counted as its T-wave region (stops 60 ms before the next R peak)
LOC_WEIGHT = 0.0  # weight of the localisation loss (0: off; see beat_windows)
LOC_SPAN = 0.25  # s either side of an R peak among which the localisation loss asks the R's outputs to stand out
RECORDS = 300  # simulated clean records of 60 s in the training bank
FOCUS = 0.0  # share of the training windows drawn from records in proportion to the sqrt of their recent loss
FOCUS_EMA = 0.5  # weight of a window's loss in its record's running loss (focus > 0 only)
STEPS = 4200  # optimiser steps of BATCH windows
OPTIONS = ("channels", "mix", "high_noise_share", "pvc_windows", "sim", "records", "steps", "t_weight", "t_share",
           "delay", "levels", "window", "pvcs", "seed", "gain", "portable", "loc_weight", "labels", "focus", "out")


class CausalConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, d: int):
        super().__init__()
        self.left = (k - 1) * d
        self.conv = nn.Conv1d(cin, cout, k, dilation=d, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(nn.functional.pad(x, (self.left, 0)))))


class Block(nn.Module):
    """Residual block: a dilated causal Conv (k 5) + ReLU, then a pointwise Conv (k 1) + ReLU when `mix`."""

    def __init__(self, c: int, d: int, mix: bool):
        super().__init__()
        self.conv = CausalConv(c, c, 5, d)
        self.mix = CausalConv(c, c, 1, 1) if mix else None

    def forward(self, h):
        r = self.conv(h)
        if self.mix is not None:
            r = self.mix(r)
        return h + r


class BeatNet(nn.Module):
    def __init__(self, c: int = CHANNELS, mix: bool = MIX):
        super().__init__()
        self.inp = CausalConv(1, c, 7, 1)
        # without `mix` a block is the bare CausalConv (as in the bundled model, so its export is byte-identical)
        self.blocks = nn.ModuleList([Block(c, d, mix) if mix else CausalConv(c, c, 5, d) for d in DILATIONS])
        self.head = nn.Conv1d(c, 1, 1)

    def forward(self, x):
        return torch.sigmoid(self.logits(x))

    def logits(self, x):
        h = self.inp(x)
        for b in self.blocks:
            h = b(h) if isinstance(b, Block) else h + b(h)
        return self.head(h)


def make_bank(rng: np.random.Generator, records: int, seconds: float, labels: str = "detector"):
    bank = []
    for _ in range(records):
        bank.append(ecgsim.clean_record(rng, seconds, version=SIM, labels=labels))
    return bank


def sample_batch(rng, bank, batch: int, t_rng=None, focus=None):
    """`t_rng`: the own generator of simulator v4's T-wave reshaping (used only when SIM >= 4). `focus`: the
    records' running losses (RecordFocus) when a share of the windows is drawn by loss (focus=), else None. Returns
    the records drawn as well."""
    xs, ys, ws, beats, drawn = [], [], [], [], []
    for i in range(batch):
        r = focus.draw(rng) if focus is not None else int(rng.integers(len(bank)))
        drawn.append(r)
        x, p = bank[r]
        a = int(rng.integers(0, len(x) - WINDOW))
        pk = p[(p >= a) & (p < a + WINDOW)] - a
        seg = x[a:a + WINDOW]
        if SIM >= 4:  # before the PVCs, so that a beat replaced by a PVC loses its new T wave too
            seg = ecgsim.reshape_t_waves(t_rng, seg, pk, share=T_SHARE)
        pvcs = SIM if PVCS is None else PVCS if PVCS else int(rng.choice([2, 3]))
        seg, pk = ecgsim.add_pvcs(rng, seg, pk, with_pvcs=PVC_WINDOWS, version=pvcs)
        # hard examples: a share of the windows draws its noise level from the upper half of the range only
        level = None
        if HIGH_NOISE_SHARE > 0 and rng.random() < HIGH_NOISE_SHARE:
            level = float(rng.uniform(0.5, 1.0))
        xs.append(ecgsim.distort(rng, seg, level=level, log_gain=LOG_GAIN))
        ys.append(ecgsim.target(pk, WINDOW, DELAY, HALF_WIDTH))
        ws.append(t_wave_weight(pk, ys[-1]))
        if LOC_WEIGHT > 0:
            beats.append(beat_windows(pk, i))
    loc = beat_index(np.concatenate(beats)) if beats else None
    return (torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ys)[:, None]),
            torch.from_numpy(np.stack(ws)[:, None]), loc, drawn)


class RecordFocus:
    """Hard-record sampling: a share FOCUS of the training windows comes from a record drawn with probability
    proportional to the square root of its running loss, the rest uniformly. A record's running loss starts at
    `start` (above any loss seen after the first steps, so every record is visited early) and moves by FOCUS_EMA
    towards the mean loss of each window drawn from it. The square root keeps a few records with loss that cannot
    be learned away (ambiguous complexes) from taking most of the focused draws."""

    def __init__(self, records: int, share: float, start: float = 2.0):
        self.loss = np.full(records, start)
        self.share = share
        self.count = np.zeros(records, dtype=np.int64)

    def draw(self, rng) -> int:
        if rng.random() < self.share:
            w = np.sqrt(self.loss)
            r = int(rng.choice(len(w), p=w / w.sum()))
        else:
            r = int(rng.integers(len(self.loss)))
        self.count[r] += 1
        return r

    def update(self, drawn: list[int], row_loss: np.ndarray) -> None:
        for r, v in zip(drawn, row_loss):
            self.loss[r] += FOCUS_EMA * (float(v) - self.loss[r])


def beat_windows(peaks: np.ndarray, row: int) -> np.ndarray:
    """Rows (row, first, end, centre) of output positions for the localisation loss: for each beat whose labelled
    outputs lie in the window, the outputs within LOC_SPAN of its R peak (shifted by DELAY), but no nearer to a
    neighbouring beat than half the way. Draws no random numbers."""
    span = int(LOC_SPAN * ecgsim.RATE)
    out = []
    for j, p in enumerate(peaks):
        c = int(p) + DELAY
        if c - HALF_WIDTH < 0 or c + HALF_WIDTH >= WINDOW:
            continue
        lo, hi = max(0, c - span), min(WINDOW, c + span + 1)
        if j > 0:
            lo = max(lo, (int(peaks[j - 1]) + int(p)) // 2 + DELAY + 1)
        if j + 1 < len(peaks):
            hi = min(hi, (int(p) + int(peaks[j + 1])) // 2 + DELAY + 1)
        out.append((row, lo, hi, c))
    return np.array(out, dtype=np.int64).reshape(-1, 4)


def beat_index(rows: np.ndarray):
    """Gather indices into the flattened [batch, WINDOW] outputs, with masks of the valid and the labelled ones."""
    k = 2 * int(LOC_SPAN * ecgsim.RATE) + 1
    pos = rows[:, 1:2] + np.arange(k)[None, :]
    valid = pos < rows[:, 2:3]
    label = np.abs(pos - rows[:, 3:4]) <= HALF_WIDTH
    label &= valid
    keep = label.any(axis=1)  # a beat whose labelled outputs its neighbour's half-way cut off would give -log 0
    idx = rows[:, 0:1] * WINDOW + np.minimum(pos, WINDOW - 1)
    return torch.from_numpy(idx[keep]), torch.from_numpy(valid[keep]), torch.from_numpy(label[keep])


def localisation_loss(logits: torch.Tensor, loc) -> torch.Tensor:
    """Per beat, -log of the share of the softmax over its window's outputs that falls on its labelled outputs:
    small when the R peak's outputs stand above every other deflection of the same beat, whatever their level."""
    idx, valid, label = loc
    if idx.shape[0] == 0:
        return logits.sum() * 0.0
    g = logits.reshape(-1)[idx]
    every = torch.logsumexp(g.masked_fill(~valid, float("-inf")), dim=1)
    on_r = torch.logsumexp(g.masked_fill(~label, float("-inf")), dim=1)
    return (every - on_r).mean()


def t_wave_weight(peaks: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample loss weight: T_WEIGHT on label-0 outputs that would report a beat inside a T-wave region
    (T_REGION after an R peak, ending 60 ms before the next one), 1 elsewhere. Draws no random numbers."""
    w = np.ones_like(y)
    if T_WEIGHT == 1.0:
        return w
    nxt = np.append(peaks[1:], len(y) + 10 * ecgsim.RATE)
    for p, q in zip(peaks, nxt):
        a = p + DELAY + int(T_REGION[0] * ecgsim.RATE)
        b = min(p + int(T_REGION[1] * ecgsim.RATE), q - int(0.06 * ecgsim.RATE)) + DELAY
        a, b = max(0, a), min(len(y), b)
        if a < b:
            w[a:b] = np.where(y[a:b] == 0, T_WEIGHT, w[a:b])
    return w


def export(model: BeatNet, path: Path) -> None:
    model.eval()
    x = torch.zeros(1, 1, WINDOW)
    torch.onnx.export(model, (x,), str(path), input_names=["ecg"], output_names=["beat"], opset_version=17,
                      dynamic_axes={"ecg": {2: "time"}, "beat": {2: "time"}}, dynamo=False)
    fold_pads(path)


def main() -> None:
    torch.set_num_threads(1)  # the machine is shared; more threads only contend
    rng = np.random.default_rng(0)
    WORK.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    args = {}
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if not eq or key not in OPTIONS:
            sys.exit(f"train.py: bad argument {a!r}; options are key=value with key in {', '.join(OPTIONS)}")
        args[key] = value
    for key, value in args.items():
        number = float if key in ("high_noise_share", "pvc_windows", "t_weight", "t_share", "loc_weight",
                                  "focus") else int
        if key not in ("out", "gain", "labels"):
            try:
                number(value)
            except ValueError:
                sys.exit(f"train.py: {key}={value!r}: not {'a number' if number is float else 'an integer'}")
    global CHANNELS, MIX, HIGH_NOISE_SHARE, PVC_WINDOWS, SIM, T_WEIGHT, T_SHARE  # overridable for experiments
    global DELAY, DILATIONS, RECEPTIVE_FIELD, WINDOW, PVCS, LOG_GAIN, LOC_WEIGHT, FOCUS
    if "gain" in args:  # gain=LOW,HIGH: log-uniform gain of the training windows
        try:
            lo, hi = (float(v) for v in args["gain"].split(","))
        except ValueError:
            sys.exit(f"train.py: gain={args['gain']!r}: want LOW,HIGH (log-uniform gain range), e.g. gain=0.2,4")
        if not 0 < lo < hi:
            sys.exit(f"train.py: gain={args['gain']!r}: need 0 < LOW < HIGH")
        LOG_GAIN = (lo, hi)
    if "pvcs" in args:
        PVCS = int(args["pvcs"])
        if PVCS not in (0, 2, 3):
            sys.exit(f"train.py: pvcs={PVCS}: PVCs as simulator version 2 or 3 draws them, or 0 (each window either)")
    DELAY = int(args.get("delay", DELAY))
    if not 0 <= DELAY <= ecgsim.RATE:
        sys.exit(f"train.py: delay={DELAY}: must be 0-{ecgsim.RATE} samples")
    if "levels" in args:  # residual blocks with dilations 2, 4, ..., 2^levels (default 7: up to 128)
        levels = int(args["levels"])
        if not 1 <= levels <= 9:
            sys.exit(f"train.py: levels={levels}: must be 1-9")
        DILATIONS = tuple(2 ** i for i in range(1, levels + 1))
        RECEPTIVE_FIELD = 1 + 6 + sum(4 * d for d in DILATIONS)
    WINDOW = int(args.get("window", WINDOW))
    if WINDOW < 2 * RECEPTIVE_FIELD or WINDOW > 60 * ecgsim.RATE // 2:
        sys.exit(f"train.py: window={WINDOW}: must be 2x the receptive field ({RECEPTIVE_FIELD}) to 10800 samples")
    CHANNELS = int(args.get("channels", CHANNELS))
    MIX = bool(int(args.get("mix", int(MIX))))
    HIGH_NOISE_SHARE = float(args.get("high_noise_share", HIGH_NOISE_SHARE))
    PVC_WINDOWS = float(args["pvc_windows"]) if "pvc_windows" in args else PVC_WINDOWS
    SIM = int(args.get("sim", SIM))
    if SIM not in (1, 2, 3, 4):
        sys.exit(f"train.py: sim={SIM}: simulator versions are 1, 2, 3 and 4")
    if "t_share" in args:
        if SIM < 4:
            sys.exit("train.py: t_share= needs sim=4")
        T_SHARE = float(args["t_share"])
        if not 0 <= T_SHARE <= 1:
            sys.exit(f"train.py: t_share={T_SHARE}: must be in [0, 1]")
    T_WEIGHT = float(args.get("t_weight", T_WEIGHT))
    if T_WEIGHT <= 0:
        sys.exit(f"train.py: t_weight={T_WEIGHT}: must be > 0")
    LOC_WEIGHT = float(args.get("loc_weight", LOC_WEIGHT))
    if LOC_WEIGHT < 0:
        sys.exit(f"train.py: loc_weight={LOC_WEIGHT}: must be >= 0")
    FOCUS = float(args.get("focus", FOCUS))
    if not 0 <= FOCUS <= 1:
        sys.exit(f"train.py: focus={FOCUS}: must be in [0, 1] (share of windows drawn by their record's loss)")
    records = int(args.get("records", RECORDS))
    # seed= redraws the initial weights and the training windows with their T-wave reshaping; the simulated
    # records stay those of seed 0 (so the cache is shared), and seed 0, the default, is the bundled model's run
    seed = int(args.get("seed", 0))
    if seed < 0:
        sys.exit(f"train.py: seed={seed}: must be >= 0")
    torch.manual_seed(seed)
    # the simulator version of the clean records names the cache: versions 3 (PVCs) and 4 (PVCs, and T waves
    # reshaped per window, after the cache) change augmentation only, so their clean records are v2's
    # portable=1: the records made with evaluate.py's CPU-independent numerics (portable.py), cached apart
    if args.get("portable", "0") not in ("0", "1"):
        sys.exit(f"train.py: portable={args['portable']!r}: must be 0 or 1")
    suffix = "_portable" if args.get("portable") == "1" else ""
    # labels=phase: the clean records' R peaks from ECGSYN's phase, as evaluate.py labels its records (ecgsim.py)
    labels = args.get("labels", "detector")
    if labels not in ("detector", "phase"):
        sys.exit(f"train.py: labels={labels!r}: must be detector or phase")
    if labels == "phase":
        suffix += "_phase"
    cache = WORK / f"bank_v{ecgsim.CLEAN_VERSION[SIM]}_{records}{suffix}.npz"
    if cache.exists():  # the simulated records depend only on the seed: reuse them between runs
        z = np.load(cache, allow_pickle=True)
        bank = list(zip(z["x"], z["p"]))
        rng = np.random.default_rng(int(z["state"]) if seed == 0 else [int(z["state"]), seed])
    else:
        bank = make_bank(rng, records=records, seconds=60, labels=labels)
        np.savez(cache, x=np.array([b[0] for b in bank], dtype=object), p=np.array([b[1] for b in bank], dtype=object),
                 state=np.int64(1))
        rng = np.random.default_rng(1 if seed == 0 else [1, seed])
    print(f"simulated {len(bank)} clean records in {time.time() - t0:.0f} s", flush=True)
    # v4's own generator; draws nothing for sim 1-3
    t_rng = np.random.default_rng(T_SEED if seed == 0 else [T_SEED, seed]) if SIM >= 4 else None
    model = BeatNet(CHANNELS, MIX)
    print(f"channels {CHANNELS}, pointwise mix {MIX}, receptive field {RECEPTIVE_FIELD}, delay {DELAY}, "
          f"window {WINDOW}, PVCs {({None: f'v{SIM}', 0: 'v2/v3'}).get(PVCS, f'v{PVCS}')}, high-noise share "
          f"{HIGH_NOISE_SHARE}, windows with PVCs {PVC_WINDOWS}, simulator v{SIM}, T-wave weight {T_WEIGHT}"
          + (f", reshaped T-wave share {T_SHARE}" if SIM >= 4 else "")
          + (f", gain log-uniform {LOG_GAIN[0]}-{LOG_GAIN[1]}" if LOG_GAIN else ", gain uniform 0.3-3")
          + (", portable numerics" if "_portable" in suffix else "") + (", phase labels" if labels == "phase" else "")
          + (f", localisation loss weight {LOC_WEIGHT}" if LOC_WEIGHT > 0 else "")
          + (f", hard-record share {FOCUS}" if FOCUS > 0 else ""))
    print(f"parameters: {sum(p.numel() for p in model.parameters())}")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = int(args.get("steps", STEPS))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    lossf = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(8.0))
    model.train()
    # focus=0 draws exactly the records and windows of before (no RecordFocus, no extra random numbers)
    focus = RecordFocus(len(bank), FOCUS) if FOCUS > 0 else None
    for step in range(steps):
        x, y, w, loc, drawn = sample_batch(rng, bank, BATCH, t_rng, focus)
        z = model.logits(x)
        if focus is not None:  # the same loss, kept per window for the records' running losses
            per = nn.functional.binary_cross_entropy_with_logits(
                z, y, weight=None if T_WEIGHT == 1.0 else w, pos_weight=lossf.pos_weight, reduction="none")
            loss = per.mean()
            focus.update(drawn, per.detach().mean(dim=(1, 2)).numpy())
        elif T_WEIGHT == 1.0:
            loss = lossf(z, y)
        else:
            loss = nn.functional.binary_cross_entropy_with_logits(z, y, weight=w, pos_weight=lossf.pos_weight)
        if loc is not None:
            loc_loss = localisation_loss(z, loc)
            loss = loss + LOC_WEIGHT * loc_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == steps - 1:
            extra = f" (localisation {loc_loss.item():.4f})" if loc is not None else ""
            print(f"step {step} loss {loss.item():.4f}{extra} ({time.time() - t0:.0f} s)", flush=True)
    if focus is not None:  # which records the focused draws went to
        top = np.argsort(-focus.loss)[:15]
        print("hardest records (index: running loss, windows drawn): "
              + ", ".join(f"{int(r)}: {focus.loss[r]:.4f}, {int(focus.count[r])}" for r in top)
              + f"; median running loss {np.median(focus.loss):.4f}, windows per record median "
              f"{int(np.median(focus.count))}, max {int(focus.count.max())}", flush=True)
    out = Path(args.get("out", ROOT / "models" / "ecg_beats.onnx"))
    export(model, out)
    meta = {"rate": ecgsim.RATE, "delay": DELAY, "receptive_field": RECEPTIVE_FIELD, "channels": CHANNELS, "mix": MIX,
            "dilations": list(DILATIONS), "window": WINDOW, "steps": steps, "batch": BATCH, "records": records,
            "high_noise_share": HIGH_NOISE_SHARE, "pvc_windows": PVC_WINDOWS, "sim": SIM, "pvcs": PVCS,
            "t_weight": T_WEIGHT, "loc_weight": LOC_WEIGHT, "focus": FOCUS, "seed": seed, "log_gain": LOG_GAIN, "portable": "_portable" in suffix, "labels": labels, **({"t_share": T_SHARE} if SIM >= 4 else {}),
            "parameters": sum(p.numel() for p in model.parameters()),
            "train_seconds": round(time.time() - t0)}
    (WORK / "train_meta.json").write_text(json.dumps(meta, indent=1))
    print(f"exported {out} ({out.stat().st_size} bytes) after {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
