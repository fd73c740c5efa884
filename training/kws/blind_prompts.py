#!/usr/bin/env python3
"""False accepts of the bundled keyword spotters on real speech that no choice was made on: three more voices of
telephone-system prompts from Debian, none of which evaluate.py uses. Writes training/kws/metrics_blind.json.

    training/work/venv/bin/python training/kws/blind_prompts.py [model=PATH] [out=PATH] [workers=N] [traces=PATH]

The recordings (fetched as models/kws.md says, `dpkg -x` into training/work/real/asterisk-extra):
- asterisk-prompt-es-co 0.20070403-2.1: Colombian Spanish, July E. Jiménez for Avatar Ltda. (GPL-2), GSM 06.10;
- asterisk-prompt-fr-armelle 20070613-2.2: French, Armelle Desjardins (BSD-style licence), GSM 06.10;
- asterisk-prompt-it-menardi-wav 1:1.4.22+mm20110907-3.1: Italian, Paola Dal Zot (CC-BY-SA-3.0), 16-bit WAV.
All are 8 kHz telephone recordings (nothing above 4 kHz), resampled to 16 kHz as evaluate.py's load() does. The
silence/ files are left out. They come without transcripts; the transcript of the prompt of the same name in
asterisk-core-sounds-<lang> (evaluate.py's data, a translation of the same English prompt, not necessarily these
words) stands in for one. A detection counts as false unless its word is in that transcript ("no" in a Spanish or
Italian prompt that says "no"); with no transcript of that name it counts as false. Each language is heard as one
stream, as evaluate.py hears the prompts, and scored by evaluate.py's own detect() and gate() with the settings of
configs/live-mic.toml (threshold 0.7 for every label, 100 ms smoothing, 1 s refractory, wake word gate with 10 s of
listening), and without the gate.
"""
from __future__ import annotations

import gzip
import json
import re
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import evaluate as ev  # noqa: E402
from words import WAKE_WORD  # noqa: E402

EXTRA = HERE.parent / "work/real/asterisk-extra/usr/share/asterisk/sounds"
# language: (directory under EXTRA, file suffix, package, speaker, licence)
VOICES = {
    "es": ("es", ".gsm", "asterisk-prompt-es-co", "July E. Jiménez (Avatar Ltda.)", "GPL-2"),
    "fr": ("fr", ".gsm", "asterisk-prompt-fr-armelle", "Armelle Desjardins", "BSD-style"),
    "it": ("it_IT_f_Menardi", ".wav", "asterisk-prompt-it-menardi-wav", "Paola Dal Zot", "CC-BY-SA-3.0"),
}
GATE_WAKE = (0.7, 0.8, 0.9)  # wake-word thresholds scored with the gate; 0.7 is configs/live-mic.toml's


def transcripts(lang: str) -> dict[str, set[str]]:
    path = ev.ASTERISK / f"doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
    if not path.is_file():
        sys.exit(f"blind_prompts.py: {path} missing; fetch asterisk-core-sounds-{lang} as models/kws.md says")
    out = {}
    for line in gzip.open(path, "rt", encoding="utf-8"):
        name, colon, text = line.partition(":")
        if colon and not name.startswith(";"):
            out[name.strip()] = set(re.findall(r"[^\W\d_]+", text.lower()))
    return out


def recordings(lang: str) -> list[tuple[str, np.ndarray]]:
    sub, suffix, package = VOICES[lang][:3]
    base = EXTRA / sub
    if not base.is_dir():
        sys.exit(f"blind_prompts.py: {base} missing; fetch it as models/kws.md says (apt-get download {package}, "
                 f"dpkg -x into training/work/real/asterisk-extra)")
    out = []
    for path in sorted(base.rglob(f"*{suffix}")):
        name = path.relative_to(base).with_suffix("").as_posix()
        if name.startswith("silence/"):
            continue
        if suffix == ".gsm":
            x, rate = sf.read(str(path), format="RAW", subtype="GSM610", samplerate=8000, channels=1,
                              dtype="float64")
        else:
            x, rate = sf.read(str(path), dtype="float64", always_2d=True)
            x = x.mean(axis=1)
        if rate != 8000:
            sys.exit(f"blind_prompts.py: {path}: {rate} Hz, expected 8000")
        out.append((name, resample_poly(x, 2, 1)))
    return out


def main() -> None:
    args = {}
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if not eq or not value or key not in ("model", "out", "workers", "traces"):
            sys.exit(f"blind_prompts.py: bad argument {a!r}; options: model=PATH out=PATH workers=N traces=PATH")
        args[key] = value
    if not args.get("workers", "2").isdigit() or int(args.get("workers", "2")) < 1:
        sys.exit(f"blind_prompts.py: workers={args['workers']!r}: want a whole number >= 1")
    model = Path(args.get("model", ROOT / "models/kws_wake.onnx"))
    out_path = Path(args.get("out", HERE / "metrics_blind.json"))
    workers = int(args.get("workers", "2"))
    cache = Path(args["traces"]) if "traces" in args else None
    if cache is not None and cache.is_file():
        ev.TRACES.update(dict(np.load(cache)))
    data, seconds, traces = {}, {}, {}
    for lang in VOICES:
        items = recordings(lang)
        text = transcripts(lang)
        names = [f"{lang}/{n}" for n, _ in items]
        ps = ev.many_probs(model, [x for _, x in items], workers, names)
        traces.update(zip(names, ps))
        seconds[lang] = sum(len(x) for _, x in items) / ev.RATE
        data[lang] = [(n, text.get(n), p) for (n, _), p in zip(items, ps)]
        print(f"{lang}: {len(items)} recordings, {seconds[lang] / 60:.1f} min, "
              f"{sum(t is not None for _, t, _ in data[lang])} with a transcript of the same name", flush=True)
    if cache is not None:
        np.savez_compressed(cache, **traces)

    def score(wake: float, listen: float | None) -> dict:
        by_lang = {}
        for lang, v in data.items():
            found = [ev.detect(p, ev.THRESHOLD, ev.SMOOTH, wake) for _, _, p in v]
            if listen is not None:
                found = ev.gate([(d, len(p)) for d, (_, _, p) in zip(found, v)], listen)
            false, excused = [], []
            for (name, words, _), dets in zip(v, found):
                for t, label, p in dets:
                    e = {"file": name, "time": t, "label": label, "p": round(p, 3)}
                    word = label.replace(WAKE_WORD, "sigflow")
                    (excused if words is not None and word in words else false).append(e)
            by_lang[lang] = {"seconds": round(seconds[lang], 1), "count": len(false),
                             "wake_words": sum(e["label"] == WAKE_WORD for e in false),
                             "per_hour": round(len(false) / seconds[lang] * 3600, 2), "events": false,
                             "in_transcript": excused}
        total = sum(seconds.values())
        count = sum(r["count"] for r in by_lang.values())
        return {"wake_threshold": wake, "listen_s": listen, "count": count, "seconds": round(total, 1),
                "per_hour": round(count / total * 3600, 2),
                "wake_words": sum(r["wake_words"] for r in by_lang.values()), "by_language": by_lang}

    res = {
        "model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else str(model),
        "settings": {"threshold": ev.THRESHOLD, "smooth_hops": ev.SMOOTH, "refractory_s": ev.REFRACTORY,
                     "hysteresis": ev.HYSTERESIS},
        "recordings": {lang: {"package": VOICES[lang][2], "speaker": VOICES[lang][3], "licence": VOICES[lang][4],
                              "files": len(data[lang]), "seconds": round(seconds[lang], 1),
                              "with_transcript": sum(t is not None for _, t, _ in data[lang])} for lang in VOICES},
        "gated": {str(w): score(w, ev.LISTEN) for w in GATE_WAKE},
        "ungated": score(ev.THRESHOLD, None),
    }
    out_path.write_text(json.dumps(res, indent=1) + "\n")
    hours = sum(seconds.values()) / 3600
    print(f"{hours:.2f} h of speech; gated at 0.7: {res['gated']['0.7']['count']} false accepts "
          f"({res['gated']['0.7']['per_hour']}/h); ungated: {res['ungated']['count']} "
          f"({res['ungated']['per_hour']}/h); wrote {out_path}")


if __name__ == "__main__":
    main()
