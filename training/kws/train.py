#!/usr/bin/env python3
"""Train one keyword-spotter model on the synthesised corpus (models/kws.onnx averages three of them).

    nice -n 10 training/work/venv/bin/python training/kws/synth.py     # corpus (once)
    nice -n 10 training/work/venv/bin/python training/kws/train.py [key=value ...]   # one model (see DEFAULTS)
    training/work/venv/bin/python training/kws/ensemble.py A.onnx B.onnx C.onnx out=models/kws.onnx

Without out= the model goes to training/kws/work/kws_seed<seed>.onnx; the bundled file is the ensemble of seeds
0, 1 and 2 (models/kws.md).

Input: log-mel features of 1 s of 16 kHz audio exactly as training/common/logmel.py defines them (n_fft 400, hop
160, 40 mels) → [1, 40, 98]. Model: causal dilated 1-D convolutions over time (pads folded into the Conv nodes),
global average pooling over time (ReduceMean), a linear layer and softmax over LABELS (words.py); the input
BatchNorm is exported as a per-channel Mul + Add. Augmentation: time shift, gain, coloured noise at random SNR (or
none, in a share of the windows), synthetic room reverberation; SpecAugment masks on the features. Voices in
synth.HELD_OUT never enter training; 10 % of the other clips are kept for validation (printed every 5 epochs).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.signal import fftconvolve
from torch import nn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "training/common"))
from logmel import logmel  # noqa: E402
from onnx_export import batchnorm_to_affine, fold_pads  # noqa: E402
from words import EXCLUDED_UNKNOWN, KEYWORDS, LABELS, WAKE_WORD  # noqa: E402

RATE = 16000
WINDOW = RATE  # 1 s
N_MELS = 40
FRAMES = 1 + (WINDOW - 400) // 160  # 98
WORK = HERE / "work"


class CausalConv(nn.Module):
    def __init__(self, cin, cout, k, d):
        super().__init__()
        self.left = (k - 1) * d
        self.conv = nn.Conv1d(cin, cout, k, dilation=d, bias=False)
        self.bn = nn.BatchNorm1d(cout)

    def forward(self, x):
        return torch.relu(self.bn(self.conv(nn.functional.pad(x, (self.left, 0)))))


class KwsNet(nn.Module):
    def __init__(self, c=64, n_out=len(LABELS)):
        super().__init__()
        self.inp = nn.BatchNorm1d(N_MELS)
        self.c1 = CausalConv(N_MELS, c, 3, 1)
        self.blocks = nn.ModuleList([CausalConv(c, c, 3, d) for d in (2, 4, 8, 16)])
        self.fc = nn.Linear(c, n_out)

    def logits(self, x):
        h = self.c1(self.inp(x))
        for b in self.blocks:
            h = h + b(h)
        return self.fc(h.mean(dim=2))

    def forward(self, x):
        return torch.softmax(self.logits(x), dim=1)


def colored_noise(rng, n):
    kind = rng.integers(3)
    w = rng.standard_normal(n)
    if kind == 0:
        return w
    spec = np.fft.rfft(w)
    f = np.arange(len(spec)) + 1.0
    spec /= f ** (0.5 if kind == 1 else 1.0)
    x = np.fft.irfft(spec, n)
    return x / (x.std() + 1e-9)


def reverb(rng, x):
    t60 = rng.uniform(0.1, 0.7)
    n = int(t60 * RATE)
    t = np.arange(n) / RATE
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / t60)
    ir[0] = 1.0
    ir /= np.sqrt((ir ** 2).sum())
    y = fftconvolve(x, ir)[: len(x)]
    return y


def place(rng, clip, shift=True):
    """Put a clip into a 1 s window at a random position (fully inside when it fits)."""
    out = np.zeros(WINDOW, dtype=np.float64)
    clip = clip[:WINDOW]
    room = WINDOW - len(clip)
    at = int(rng.integers(0, room + 1)) if shift else room // 2
    out[at:at + len(clip)] = clip
    return out


def augment(rng, x, clean=0.0):
    """Peak-normalise, reverberate (30 %), set a gain of -35...0 dB, add coloured noise at 5-40 dB SNR and a sensor
    noise floor. With probability `clean` the window gets no coloured noise, and then half the time no floor
    either (digital silence around the word, as a gated microphone or a file delivers it)."""
    x = x / (np.abs(x).max() + 1e-9)
    if rng.random() < 0.3:
        x = reverb(rng, x)
        x = x / (np.abs(x).max() + 1e-9)
    x = x * 10 ** (rng.uniform(-35, 0) / 20)
    if clean > 0 and rng.random() < clean:
        return x if rng.random() < 0.5 else x + rng.standard_normal(len(x)) * 10 ** (rng.uniform(-90, -60) / 20)
    snr = rng.uniform(5, 40)
    p_sig = np.mean(x[np.abs(x) > 0] ** 2) if np.any(x) else 1e-6
    x = x + colored_noise(rng, len(x)) * np.sqrt(p_sig / 10 ** (snr / 10))
    x = x + rng.standard_normal(len(x)) * 10 ** (rng.uniform(-90, -60) / 20)  # sensor floor
    return x


def background(rng):
    x = colored_noise(rng, WINDOW) * 10 ** (rng.uniform(-80, -15) / 20)
    if rng.random() < 0.3:  # hum
        t = np.arange(WINDOW) / RATE
        x = x + 10 ** (rng.uniform(-70, -25) / 20) * np.sin(2 * np.pi * rng.choice([50, 60, 100, 120]) * t)
    return x


def features(x):
    return logmel(x, RATE, n_fft=400, hop=160, n_mels=N_MELS)


def load_running():
    """The takes of running speech without keywords (synth_running.py: training voices only), in index order."""
    path = WORK / "running.json"
    if not path.is_file():
        sys.exit(f"train.py: running=N needs {path}; make it with training/kws/synth_running.py")
    return [np.load(WORK / "running" / r["file"]).astype(np.float64) for r in json.loads(path.read_text())]


def load_corpus():
    index = [r for r in json.loads((WORK / "index.json").read_text()) if r["word"] not in EXCLUDED_UNKNOWN]
    clips = {}
    for r in index:
        clips[r["file"]] = np.load(WORK / "clips" / r["file"]).astype(np.float64)
    return index, clips


def label_of(word):
    if word in KEYWORDS or word == WAKE_WORD:
        return LABELS.index(word)
    return LABELS.index("unknown")


def make_epoch(rng, train, clips, unknown_n, background_n, keyword_repeat, context=0.0, clean=0.0, running=(),
               running_n=0):
    """One augmented feature set: every keyword clip `keyword_repeat` times, `unknown_n` windows of ordinary
    words, `background_n` windows of noise (and of keywords cut by the window edge, as `unknown`) and `running_n`
    windows cut at random from the takes of running speech `running` (synth_running.py), as `unknown`. With
    probability `context` a keyword window also holds a short piece of an ordinary word just before or after it,
    as in running speech (the keyword stays whole and is still the label). `clean`: see augment()."""
    xs, ys = [], []
    unk = [r for r in train if label_of(r["word"]) == LABELS.index("unknown")]
    for r in train:
        y = label_of(r["word"])
        reps = keyword_repeat if y != LABELS.index("unknown") else 0
        for _ in range(reps):
            c = clips[r["file"]]
            if rng.random() < context:
                other = clips[unk[int(rng.integers(len(unk)))]["file"]]
                gap = int(rng.integers(0, 1600))
                room = min(len(other), WINDOW - len(c) - gap - int(rng.integers(400, 1600)))
                if room >= 1600:  # at least 0.1 s of the other word, and the keyword stays whole
                    piece, z = (other[:room], np.zeros(gap)) if rng.random() < 0.5 else (other[-room:], np.zeros(gap))
                    c = np.concatenate([c, z, piece]) if rng.random() < 0.5 else np.concatenate([piece, z, c])
            xs.append(features(augment(rng, place(rng, c), clean)))
            ys.append(y)
    for i in rng.choice(len(unk), size=unknown_n, replace=True):
        c = clips[unk[i]["file"]]
        if rng.random() < 0.25:  # two ordinary words in one window
            c2 = clips[unk[int(rng.integers(len(unk)))]["file"]]
            c = np.concatenate([c, np.zeros(int(rng.integers(0, 3200))), c2])
        xs.append(features(augment(rng, place(rng, c), clean)))
        ys.append(LABELS.index("unknown"))
    kw = [r for r in train if label_of(r["word"]) != LABELS.index("unknown")]
    for k in range(background_n):
        if k % 4 == 0:
            # a keyword cut by the window edge (less than a third inside) is not a detection
            c = clips[kw[int(rng.integers(len(kw)))]["file"]]
            keep = int(len(c) * rng.uniform(0.05, 0.3))
            part = c[:keep] if rng.random() < 0.5 else c[-keep:]
            x = np.zeros(WINDOW)
            if part is c[:keep]:
                x[WINDOW - keep:] = part
            else:
                x[:keep] = part
            xs.append(features(augment(rng, x, clean)))
            ys.append(LABELS.index("unknown"))
        else:
            xs.append(features(background(rng)))
            ys.append(LABELS.index("background"))
    for i in (rng.choice(len(running), size=running_n, replace=True) if running_n else ()):
        c = running[i]
        if len(c) > WINDOW:
            at = int(rng.integers(0, len(c) - WINDOW + 1))
            x = c[at:at + WINDOW]
        else:
            x = place(rng, c)
        xs.append(features(augment(rng, x, clean)))
        ys.append(LABELS.index("unknown"))
    return np.stack(xs).astype(np.float32), np.asarray(ys)


def spec_augment(x):
    """Two frequency masks (≤ 6 mels) and two time masks (≤ 10 frames) per example, filled with the example's
    mean; a random level shift of ±2 (log domain, i.e. gain). Applied on the fly to the cached feature sets."""
    x = x.clone()
    b, f, t = x.shape
    fill = x.mean(dim=(1, 2), keepdim=True)
    for _ in range(2):
        w = torch.randint(0, 7, (b,))
        f0 = (torch.rand(b) * (f - w)).long()
        fr = torch.arange(f)[None, :]
        m = (fr >= f0[:, None]) & (fr < (f0 + w)[:, None])
        x = torch.where(m[:, :, None], fill, x)
        w = torch.randint(0, 11, (b,))
        t0 = (torch.rand(b) * (t - w)).long()
        tr = torch.arange(t)[None, :]
        m = (tr >= t0[:, None]) & (tr < (t0 + w)[:, None])
        x = torch.where(m[:, None, :], fill, x)
    return x + (torch.rand(b, 1, 1) * 4 - 2)


def export(model, path):
    model.eval()
    x = torch.zeros(1, N_MELS, FRAMES)
    torch.onnx.export(model, (x,), str(path), input_names=["logmel"], output_names=["probs"], opset_version=17,
                      dynamo=False)
    fold_pads(path)
    batchnorm_to_affine(path)


# Training options (key=value on the command line); the defaults make the bundled model.
DEFAULTS = {
    "epochs": 40,          # passes, each over one cached feature set (cycled)
    "sets": 4,             # augmented feature sets (each its own seed: the same sets with any `workers`)
    "unknown": 8000,       # windows of ordinary words per set
    "background": 1000,    # windows of noise (3/4) and of edge-cut keywords (1/4) per set
    "keyword_repeat": 3,   # augmented copies of every keyword clip per set
    "running": 0,          # windows of synthesised running speech without keywords per set (synth_running.py)
    "context": 0.0,        # share of keyword windows with a piece of another word beside the keyword
    "clean": 0.2,          # share of word windows without added noise (see augment)
    "channels": 96,        # convolution width
    "val": 0.1,            # share of training-voice clips kept apart for validation (by file name)
    "workers": 2,          # processes computing feature sets
    "max_lr": 3e-3,
    "seed": 0,             # torch's seed and the first word of every feature set's seed
}
FLOAT_OPTIONS = {"context", "clean", "val", "max_lr"}


def parse_args(argv):
    args = dict(DEFAULTS)
    out = None
    for a in argv:
        key, eq, value = a.partition("=")
        if key == "out" and eq:
            out = Path(value)
            continue
        if not eq or key not in DEFAULTS:
            sys.exit(f"train.py: bad argument {a!r}; options are key=value with key in out, {', '.join(DEFAULTS)}")
        try:
            args[key] = float(value) if key in FLOAT_OPTIONS else int(value)
        except ValueError:
            sys.exit(f"train.py: {key}={value!r}: not {'a number' if key in FLOAT_OPTIONS else 'an integer'}")
    if not 0.0 <= args["context"] <= 1.0 or not 0.0 <= args["clean"] <= 1.0 or not 0.0 <= args["val"] < 0.5:
        sys.exit("train.py: context and clean must lie in [0, 1], val in [0, 0.5)")
    if args["running"] < 0:
        sys.exit("train.py: running must not be negative")
    if min(args["epochs"], args["sets"], args["channels"], args["workers"]) < 1:
        sys.exit("train.py: epochs, sets, channels and workers must be at least 1")
    if out is None:
        out = WORK / f"kws_seed{args['seed']}.onnx"
    return args, out


def is_validation(r, share):
    """Training-voice clips kept apart for validation: a fixed share chosen by a hash of the file name."""
    import zlib

    return zlib.crc32(r["file"].encode()) % 1000 < share * 1000


_CORPUS = {}


def _feature_set(job):
    k, recipe = job
    train, clips = _CORPUS["train"], _CORPUS["clips"]
    rng = np.random.default_rng([recipe["seed"], k])
    return make_epoch(rng, train, clips, unknown_n=recipe["unknown"], background_n=recipe["background"],
                      keyword_repeat=recipe["keyword_repeat"], context=recipe["context"], clean=recipe["clean"],
                      running=_CORPUS["running"], running_n=recipe.get("running", 0))


def feature_sets(train, clips, args, t0):
    """The cached augmented feature sets of this recipe, computed in `workers` processes where missing."""
    import hashlib
    import multiprocessing

    recipe = {k: args[k] for k in ("unknown", "background", "keyword_repeat", "context", "clean", "val", "seed")}
    running = []
    if args["running"]:  # only then part of the recipe, so the sets cached before the option existed still match
        recipe["running"] = args["running"]
        recipe["running_takes"] = hashlib.sha256((WORK / "running.json").read_bytes()).hexdigest()[:12]
        running = load_running()
    tag = hashlib.sha256(json.dumps([recipe, sorted(r["file"] for r in train)]).encode()).hexdigest()[:12]
    paths = [WORK / f"features_{tag}_{k}.npz" for k in range(args["sets"])]
    missing = [k for k, p in enumerate(paths) if not p.exists()]
    if missing:
        _CORPUS.update(train=train, clips=clips, running=running)
        with multiprocessing.get_context("fork").Pool(min(args["workers"], len(missing))) as pool:
            for k, (x, y) in zip(missing, pool.imap(_feature_set, [(k, recipe) for k in missing])):
                np.savez(paths[k], x=x, y=y)
                print(f"feature set {k}: {len(y)} windows ({time.time() - t0:.0f} s)", flush=True)
    sets = []
    for p in paths:
        z = np.load(p)
        sets.append((torch.from_numpy(z["x"]), torch.from_numpy(z["y"])))
    return sets


def centred_accuracy(model, rows, clips):
    """Accuracy on clips centred in 1 s at 0.3 peak, as evaluate.py scores the held-out voices (clean)."""
    model.eval()
    rng = np.random.default_rng(7)
    xs, ys = [], []
    for r in rows:
        x = place(rng, clips[r["file"]], shift=False)
        xs.append(features(x / (np.abs(x).max() + 1e-9) * 0.3))
        ys.append(label_of(r["word"]))
    with torch.no_grad():
        pred = model.logits(torch.from_numpy(np.stack(xs).astype(np.float32))).argmax(1).numpy()
    ys = np.asarray(ys)
    unk = ys == LABELS.index("unknown")
    model.train()
    return {"all": float((pred == ys).mean()), "keywords": float((pred == ys)[~unk].mean()),
            "unknown": float((pred == ys)[unk].mean())}


def main():
    args, out = parse_args(sys.argv[1:])
    torch.manual_seed(args["seed"])
    torch.set_num_threads(1)
    t0 = time.time()
    print(f"options: {json.dumps(args)}", flush=True)
    index, clips = load_corpus()
    train = [r for r in index if not r["held_out"] and not is_validation(r, args["val"])]
    val = [r for r in index if not r["held_out"] and is_validation(r, args["val"])]
    print(f"{len(train)} training clips, {len(val)} validation clips, "
          f"{sum(r['held_out'] for r in index)} held out", flush=True)
    model = KwsNet(c=args["channels"])
    print(f"parameters: {sum(p.numel() for p in model.parameters())}", flush=True)
    sets = feature_sets(train, clips, args, t0)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    lossf = nn.CrossEntropyLoss(label_smoothing=0.05)
    epochs = args["epochs"]
    per_epoch = [(len(y) + 63) // 64 for _, y in sets]
    total_steps = sum(per_epoch[ep % len(sets)] for ep in range(epochs)) + 1
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args["max_lr"], total_steps=total_steps)
    for ep in range(epochs):
        x, y = sets[ep % len(sets)]
        model.train()
        perm = torch.randperm(len(y))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            logits = model.logits(spec_augment(x[idx]))
            loss = lossf(logits, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(1) == y[idx]).sum().item()
            total += len(idx)
        line = f"epoch {ep} loss {loss_sum / total:.4f} train acc {correct / total:.4f}"
        if val and (ep % 5 == 4 or ep == epochs - 1):
            a = centred_accuracy(model, val, clips)
            line += f" | validation all {a['all']:.4f} keywords {a['keywords']:.4f} unknown {a['unknown']:.4f}"
        print(f"{line} ({time.time() - t0:.0f} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    export(model, out)
    torch.save(model.state_dict(), WORK / "kws.pt")
    print(f"exported {out} after {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
