#!/usr/bin/env python3
"""Train the keyword spotter on the synthesised corpus and export models/kws.onnx.

    nice -n 10 training/work/venv/bin/python training/kws/synth.py     # corpus (once)
    nice -n 10 training/work/venv/bin/python training/kws/train.py     # model

Input: log-mel features of 1 s of 16 kHz audio exactly as training/common/logmel.py defines them (n_fft 400, hop
160, 40 mels) → [1, 40, 98]. Model: causal dilated 1-D convolutions over time (pads folded into the Conv nodes),
global average pooling over time, a linear layer and softmax over LABELS (words.py). Augmentation: time shift,
gain, coloured noise at random SNR, synthetic room reverberation. Voices in synth.HELD_OUT never enter training.
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
from onnx_export import fold_pads  # noqa: E402
from words import KEYWORDS, LABELS, WAKE_WORD  # noqa: E402

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


def augment(rng, x, noise=True):
    x = x / (np.abs(x).max() + 1e-9)
    if rng.random() < 0.3:
        x = reverb(rng, x)
        x = x / (np.abs(x).max() + 1e-9)
    x = x * 10 ** (rng.uniform(-35, 0) / 20)
    if noise:
        snr = rng.uniform(5, 40)
        p_sig = np.mean(x[np.abs(x) > 0] ** 2) if np.any(x) else 1e-6
        nz = colored_noise(rng, len(x)) * np.sqrt(p_sig / 10 ** (snr / 10))
        x = x + nz
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


def load_corpus():
    index = json.loads((WORK / "index.json").read_text())
    clips = {}
    for r in index:
        clips[r["file"]] = np.load(WORK / "clips" / r["file"]).astype(np.float64)
    return index, clips


def label_of(word):
    if word in KEYWORDS or word == WAKE_WORD:
        return LABELS.index(word)
    return LABELS.index("unknown")


def make_epoch(rng, train, clips, unknown_n, background_n, keyword_repeat):
    xs, ys = [], []
    for r in train:
        y = label_of(r["word"])
        reps = keyword_repeat if y != LABELS.index("unknown") else 0
        for _ in range(reps):
            xs.append(features(augment(rng, place(rng, clips[r["file"]]))))
            ys.append(y)
    unk = [r for r in train if label_of(r["word"]) == LABELS.index("unknown")]
    for i in rng.choice(len(unk), size=unknown_n, replace=True):
        c = clips[unk[i]["file"]]
        if rng.random() < 0.25:  # two ordinary words in one window
            c2 = clips[unk[int(rng.integers(len(unk)))]["file"]]
            c = np.concatenate([c, np.zeros(int(rng.integers(0, 3200))), c2])
        xs.append(features(augment(rng, place(rng, c))))
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
            xs.append(features(augment(rng, x)))
            ys.append(LABELS.index("unknown"))
        else:
            xs.append(features(background(rng)))
            ys.append(LABELS.index("background"))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.asarray(ys))


def export(model, path):
    model.eval()
    x = torch.zeros(1, N_MELS, FRAMES)
    torch.onnx.export(model, (x,), str(path), input_names=["logmel"], output_names=["probs"], opset_version=17,
                      dynamo=False)
    fold_pads(path)


def main():
    args = dict(a.split("=") for a in sys.argv[1:])
    epochs = int(args.get("epochs", 16))
    torch.manual_seed(0)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    t0 = time.time()
    index, clips = load_corpus()
    train = [r for r in index if not r["held_out"]]
    print(f"{len(train)} training clips, {len(index) - len(train)} held out", flush=True)
    model = KwsNet()
    print(f"parameters: {sum(p.numel() for p in model.parameters())}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-3)
    per_epoch = None
    lossf = nn.CrossEntropyLoss(label_smoothing=0.05)
    sched = None
    # Augmented feature sets are computed once and cycled (features cost more than training steps here).
    sets = []
    for k in range(int(args.get("sets", 2))):
        sets.append(make_epoch(rng, train, clips, unknown_n=1500, background_n=700, keyword_repeat=3))
        print(f"feature set {k}: {len(sets[-1][1])} windows ({time.time() - t0:.0f} s)", flush=True)
    for ep in range(epochs):
        x, y = sets[ep % len(sets)]
        if sched is None:
            per_epoch = (len(y) + 63) // 64
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * per_epoch + 1)
        model.train()
        perm = torch.randperm(len(y))
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(y), 64):
            idx = perm[i:i + 64]
            out = model.logits(x[idx])
            loss = lossf(out, y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == y[idx]).sum().item()
            total += len(idx)
        print(f"epoch {ep} loss {loss_sum / total:.4f} train acc {correct / total:.4f} ({time.time() - t0:.0f} s)",
              flush=True)
    out = ROOT / "models/kws.onnx"
    export(model, out)
    torch.save(model.state_dict(), WORK / "kws.pt")
    print(f"exported {out} after {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
