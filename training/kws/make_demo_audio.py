#!/usr/bin/env python3
"""Build audio/speech_with_keywords.wav: real conversation (the pyannote sample, MIT) with synthesised keywords
spoken between its phrases, and audio/speech_with_keywords.tsv with the ground truth (start, end, label).

    training/work/venv/bin/python training/kws/make_demo_audio.py

The keywords come from voices the keyword spotter never trained on (flite `rms`, espeak-ng `en-us-nyc` with the
`f5`/`steph` variants; see synth.HELD_OUT), scaled to the conversation's speech level. The conversation is cut where no
speaker is active (RTTM) or between two sentences of one speaker (STM), so no word is split.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
from synth import load_16k  # noqa: E402
from words import tts_text  # noqa: E402

RATE = 16000
# (cut the conversation at this time in s, then say this keyword with this voice)
PLAN = [
    (0.0, "hey_sigflow", ["flite", "-voice", "rms"]),
    (6.6, "left", ["espeak-ng", "-v", "en-us-nyc+f5", "-s", "150"]),
    (12.541, "stop", ["flite", "-voice", "rms"]),
    (17.779, "go", ["espeak-ng", "-v", "en-us-nyc+steph", "-s", "140"]),
    (21.6, "hey_sigflow", ["espeak-ng", "-v", "en-us-nyc+steph", "-s", "140"]),
    (30.0, "yes", ["flite", "-voice", "rms"]),
]


def say(cmd: list[str], text: str) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/o.wav"
        if cmd[0] == "flite":
            full = cmd + ["-o", out, "-t", text]
        else:
            full = cmd + ["-w", out, text]
        subprocess.run(full, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return load_16k(out).astype(np.float64)


def main() -> None:
    with wave.open(str(ROOT / "audio/pyannote_sample.wav")) as w:
        conv = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float64) / 32768.0
    speech_rms = np.sqrt(np.mean(conv[int(7 * RATE):int(28 * RATE)] ** 2)) * 2.0
    pieces = []
    labels = []
    t = 0
    prev_cut = 0
    gap = np.zeros(int(0.6 * RATE))
    for cut, word, cmd in PLAN:
        c = int(cut * RATE)
        pieces.append(conv[prev_cut:c])
        t += c - prev_cut
        prev_cut = c
        x = say(cmd, tts_text(word))
        x = x / (np.sqrt(np.mean(x ** 2)) + 1e-9) * speech_rms
        pieces += [gap, x, gap]
        labels.append((round((t + len(gap)) / RATE, 3), round((t + len(gap) + len(x)) / RATE, 3), word))
        t += 2 * len(gap) + len(x)
    pieces.append(conv[prev_cut:])
    y = np.concatenate(pieces)
    y = np.clip(y, -1.0, 32767 / 32768)
    out = ROOT / "audio/speech_with_keywords.wav"
    with wave.open(str(out), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((y * 32768).round().astype("<i2").tobytes())
    tsv = "start_s\tend_s\tlabel\n" + "".join(f"{a}\t{b}\t{w}\n" for a, b, w in labels)
    (ROOT / "audio/speech_with_keywords.tsv").write_text(tsv)
    print(f"{out}: {len(y) / RATE:.1f} s\n{tsv}")


if __name__ == "__main__":
    main()
