#!/usr/bin/env python3
"""Evaluate models/kws.onnx; prints the numbers of models/kws.md and writes training/kws/metrics.json.

    training/work/venv/bin/python training/kws/evaluate.py [model=PATH] [out=PATH] [workers=N] [traces=PATH]

1. Held-out synthesised voices (synth.HELD_OUT: voices and espeak variants never trained on), each clip centred in
   a 1 s window, clean and with noise at 10-30 dB SNR: accuracy and confusion matrix.
2. Streaming detection on real recordings, exactly as the `cnn` stage runs the model and configs/default.toml
   sets it up: log-mel over the last 1 s, hop 10 ms; a detection when a keyword's probability, averaged over the
   latest SMOOTH hops, reaches the threshold, then REFRACTORY before the same label can fire again and a fall below
   the threshold minus HYSTERESIS to re-arm it (detect()); tables by threshold, and SETTINGS compared at
   THRESHOLD (no smoothing, a higher wake-word threshold).
   - recall on real keywords: alsa-utils' "Front/Rear/Side Left/Right" (left, right) and pocketsphinx's
     goforward.raw ("go forward ten meters": go);
   - false accepts on real non-keyword speech: the pyannote sample (audio/), pocketsphinx's LibriVox excerpts,
     cards and TIDIGITS recordings — a detection counts as false unless the word is in that file's transcript;
   - false accepts on background: 30 min of synthetic white/pink/brown noise and hum at several levels.
3. The same streaming detection on the telephone-system prompts of Debian's asterisk-core-sounds (one professional
   speaker per language, read sentences, wideband G.722 at 16 kHz, a transcript line per file): English, Spanish,
   French, Italian and Russian, ~2 h in all. A detection is false unless its word is in the file's transcript;
   each English file whose transcript holds a keyword counts once towards recall on keywords in real sentences.
Real recordings that cannot be bundled are fetched from Debian packages (see the model card for the commands).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import soundfile as sf
from scipy.signal import resample_poly

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "training/common"))
from logmel import logmel  # noqa: E402
from words import KEYWORDS, LABELS, WAKE_WORD  # noqa: E402
import synth  # noqa: E402
import train  # noqa: E402

RATE = 16000
THRESHOLD = 0.7
REFRACTORY = 1.0  # s
HYSTERESIS = 0.1
SMOOTH = 10  # hops: configs/default.toml's smooth = "100ms"
# (smooth hops, wake-word threshold) of the settings compared at THRESHOLD
SETTINGS = ((1, None), (SMOOTH, None), (1, 0.8), (1, 0.9), (1, 0.95), (SMOOTH, 0.9), (20, 0.9))
LISTEN = 10.0  # s: the `cnn` stage's wake-word `listen` in configs/default.toml
# wake-word thresholds compared with the wake-word gate (the commands at THRESHOLD, all labels smoothed over SMOOTH)
GATED_WAKE = (0.7, 0.8, 0.85, 0.9, 0.95)
HOP = 160
PS = HERE.parent / "work/real/ps/usr/share/pocketsphinx/test/data"
ALSA = Path("/usr/share/sounds/alsa")
# `dpkg -x` of asterisk-core-sounds-<lang> (transcripts) and asterisk-core-sounds-<lang>-g722 (recordings)
ASTERISK = HERE.parent / "work/real/asterisk/usr/share"
PROMPT_VOICES = {"en": "en_US_f_Allison", "es": "es_MX_f_Allison", "fr": "fr_CA_f_June", "it": "it_IT_m_Carlo",
                 "ru": "ru_RU_f_IvrvoiceRU"}
TARGETS = KEYWORDS + [WAKE_WORD]


def session(model: Path = ROOT / "models/kws.onnx"):
    o = ort.SessionOptions()
    o.intra_op_num_threads = 1
    return ort.InferenceSession(str(model), o, providers=["CPUExecutionProvider"])


def probs(sess, feats: np.ndarray) -> np.ndarray:
    return sess.run(None, {"logmel": feats[None].astype(np.float32)})[0][0]


def load(path: Path) -> np.ndarray:
    if path.suffix == ".raw":
        x = np.fromfile(path, dtype="<i2").astype(np.float64) / 32768.0
        rate = 16000
    else:
        x, rate = sf.read(str(path), dtype="float64", always_2d=True)
        x = x.mean(axis=1)
    if rate != RATE:
        from math import gcd
        g = gcd(rate, RATE)
        x = resample_poly(x, RATE // g, rate // g)
    return x


def stream_probs(sess, x: np.ndarray) -> np.ndarray:
    """Class probabilities of the model run every 10 ms over the last 1 s: [windows, labels]; window i ends at
    (i * HOP + RATE) / RATE - 0.5 s of the file."""
    # half a second of faint noise on both sides, so words at the very start or end of a file are seen whole
    pad = np.random.default_rng(0).standard_normal(RATE // 2) * 1e-4
    feats = logmel(np.concatenate([pad, x, pad]), RATE)
    w = train.FRAMES
    return np.stack([probs(sess, feats[:, i:i + w]) for i in range(0, feats.shape[1] - w + 1)])


def smoothed(ps: np.ndarray, hops: int) -> np.ndarray:
    """Each label's mean over the latest `hops` windows (over all so far while there are fewer), as the `cnn`
    stage's `smooth` computes it."""
    if hops <= 1:
        return ps
    c = np.cumsum(np.vstack([np.zeros((1, ps.shape[1])), ps.astype(np.float64)]), axis=0)
    i = np.arange(1, len(ps) + 1)
    lo = np.maximum(i - hops, 0)
    return (c[i] - c[lo]) / (i - lo)[:, None]


def detect(ps: np.ndarray, threshold: float, smooth: int = SMOOTH,
           wake: float | None = None) -> list[tuple[float, str, float]]:
    """Detections (time s, label, score) by the `cnn` stage's rule: a keyword's score (its probability, averaged
    over `smooth` hops) reaches its threshold (`wake` for the wake word when given, else `threshold`) while the
    label is armed and REFRACTORY has passed since its last detection; the label re-arms when its score falls
    below the threshold minus HYSTERESIS."""
    s = smoothed(ps, smooth)
    out = []
    for k in range(2, len(LABELS)):
        th = wake if wake is not None and LABELS[k] == WAKE_WORD else threshold
        armed, last = True, -1e9
        col = s[:, k]
        for i in np.nonzero((col >= th) | (col < th - HYSTERESIS))[0]:
            t = (i * HOP + RATE) / RATE - 0.5
            if armed and col[i] >= th:
                if t - last >= REFRACTORY:
                    out.append((round(t, 2), LABELS[k], float(col[i])))
                    last, armed = t, False
            elif not armed and col[i] < th - HYSTERESIS:
                armed = True
    # in the order the stage reports them: by time, then label (what gate() relies on)
    return sorted(out, key=lambda d: (d[0], LABELS.index(d[1])))


def gate(streams: list[tuple[list, int]], listen: float = LISTEN) -> list[list]:
    """The `cnn` stage's `wake-word` rule over recordings heard one after the other as one stream: a detection
    of a command is kept only within `listen` s of the latest wake word or kept command. `streams`: (detections
    of one recording, as detect() gives them, its length in hops); gives the kept detections of each."""
    out, until, offset = [], None, 0
    for dets, hops in streams:
        kept = []
        for d in dets:
            t = offset + round(d[0] * RATE / HOP)  # hops since the start of the stream
            if d[1] == WAKE_WORD or (until is not None and t <= until):
                kept.append(d)
                until = t + round(listen * RATE / HOP)
        out.append(kept)
        offset += hops
    return out


_JOB: dict = {}


def _job_probs(i: int) -> np.ndarray:
    if "sess" not in _JOB:
        _JOB["sess"] = session(_JOB["model"])
    return stream_probs(_JOB["sess"], _JOB["arrays"][i])


# Probability traces by recording name (option traces=PATH, an .npz written by an earlier run of the same model):
# taken from there when present, else computed. WAKE_TRACES: the same for the wake_model= option's model.
TRACES: dict[str, np.ndarray] = {}
WAKE_TRACES: dict[str, np.ndarray] = {}
# wake_model=PATH: the wake word's probability comes from this model, the other labels' from model= (a candidate
# that runs both side by side); None: from model= alone
WAKE_MODEL: list[Path] = []


def many_probs(model: Path, arrays: list[np.ndarray], workers: int, names: list[str]) -> list[np.ndarray]:
    """stream_probs() of every array (with wake_model=, the wake word's column from that model's), in `workers`
    processes (each its own one-thread session: the same numbers as one process gives); traces already in TRACES
    (under the same name, of the same length) are not computed again."""
    ps = model_probs(model, arrays, workers, names, TRACES)
    if not WAKE_MODEL:
        return ps
    qs = model_probs(WAKE_MODEL[0], arrays, workers, names, WAKE_TRACES)
    k = LABELS.index(WAKE_WORD)
    out = []
    for p, q in zip(ps, qs):
        p = p.copy()
        p[:, k] = q[:, k]
        out.append(p)
    return out


def model_probs(model: Path, arrays: list[np.ndarray], workers: int, names: list[str],
                cache: dict[str, np.ndarray]) -> list[np.ndarray]:
    import multiprocessing

    todo = [i for i in range(len(arrays)) if names[i] not in cache]
    _JOB.clear()
    _JOB.update(model=model, arrays=arrays)
    if workers == 1:
        done = [_job_probs(i) for i in todo]
    else:
        # longest first, so the pool's last task is a short one
        todo.sort(key=lambda i: -len(arrays[i]))
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            done = pool.map(_job_probs, todo, chunksize=1)
    for i, p in zip(todo, done):
        cache[names[i]] = p
    return [cache[n] for n in names]


def prompts(lang: str) -> list[tuple[str, np.ndarray, set[str]]]:
    """(name, samples at 16 kHz, transcript words) of each spoken prompt of asterisk-core-sounds-<lang>; tones
    ("[beep]"-style transcripts) and the silence/ files are left out."""
    import G722  # g722 (training/requirements.txt): ITU-T G.722 decoder

    text_file = ASTERISK / f"doc/asterisk-core-sounds-{lang}/core-sounds-{lang}.txt.gz"
    sounds = ASTERISK / "asterisk/sounds" / PROMPT_VOICES[lang]
    if not text_file.is_file() or not sounds.is_dir():
        sys.exit(f"evaluate.py: {text_file} or {sounds} missing; fetch them as models/kws.md says (apt-get download "
                 f"asterisk-core-sounds-{lang} asterisk-core-sounds-{lang}-g722, dpkg -x into training/work/real/asterisk)")
    out = []
    for line in gzip.open(text_file, "rt", encoding="utf-8"):
        name, colon, text = line.partition(":")
        name, text = name.strip(), text.strip()
        if not colon or name.startswith(";") or not text or text.startswith("[") or name.startswith("silence/"):
            continue
        path = sounds / f"{name}.g722"
        if not path.is_file():
            continue
        x = np.asarray(G722.G722(RATE, 64000).decode(path.read_bytes()), dtype=np.float64) / 32768.0
        out.append((name, x, set(re.findall(r"[^\W\d_]+", text.lower()))))
    return out


def held_out(sess, wake_sess=None) -> dict:
    index, clips = train.load_corpus()
    test = [r for r in index if r["held_out"]]
    rng = np.random.default_rng(7)
    n = len(LABELS)
    res = {}
    for cond in ("clean", "noisy"):
        conf = np.zeros((n, n), dtype=int)
        groups: dict[str, list[int]] = {}  # held-out voice, or espeak variant heard with training voices
        for r in test:
            x = train.place(rng, clips[r["file"]], shift=False)
            x = x / (np.abs(x).max() + 1e-9) * 0.3
            if cond == "noisy":
                snr = rng.uniform(10, 30)
                p_sig = np.mean(x[np.abs(x) > 0] ** 2)
                x = x + train.colored_noise(rng, len(x)) * np.sqrt(p_sig / 10 ** (snr / 10))
            y = train.label_of(r["word"])
            f = train.features(x)
            p = probs(sess, f)
            if wake_sess is not None:
                k = LABELS.index(WAKE_WORD)
                p[k] = probs(wake_sess, f)[k]
            guess = int(np.argmax(p))
            conf[y, guess] += 1
            g = (f"{r['engine']} {r['voice']}" if (r["engine"], r["voice"]) in synth.HELD_OUT
                 else f"espeak variant {r['variant']}")
            groups.setdefault(g, [0, 0])
            groups[g][0] += int(guess == y)
            groups[g][1] += 1
        kw = [LABELS.index(w) for w in TARGETS]
        kw_total = conf[kw].sum()
        res[cond] = {
            "accuracy_all": round(float(np.trace(conf) / conf.sum()), 4),
            "accuracy_keywords": round(float(sum(conf[k, k] for k in kw) / kw_total), 4),
            "accuracy_unknown": round(float(conf[1, 1] / max(conf[1].sum(), 1)), 4),
            "clips": int(conf.sum()), "keyword_clips": int(kw_total),
            "confusion": conf.tolist(),
            "by_voice": {g: {"accuracy": round(c / t, 4), "clips": t} for g, (c, t) in sorted(groups.items())},
        }
    res["labels"] = LABELS
    res["voices"] = sorted({f"{r['engine']}:{r['voice']}" + (f"+{r['variant']}" if r["variant"] else "")
                            for r in test})[:12] + ["…"]
    return res


def real_traces(model: Path, workers: int) -> dict:
    """Probability traces of every real recording, with what the scoring needs to know of each."""
    pos = [(ALSA / f"{a}_{b}.wav", b.lower()) for a in ("Front", "Rear", "Side") for b in ("Left", "Right")]
    pos.append((PS / "goforward.raw", "go"))
    pos_x = many_probs(model, [load(path) for path, _ in pos], workers, [f"pos/{path.name}" for path, _ in pos])
    pos_probs = [(path, word, p) for (path, word), p in zip(pos, pos_x)]
    # real speech without (or with transcribed) keywords
    speech = [(ROOT / "audio/pyannote_sample.wav", (ROOT / "audio/pyannote_sample.stm").read_text())]
    for f in sorted((PS / "librivox").glob("*.wav")):
        speech.append((f, (PS / "librivox/transcription").read_text()))
    for f in sorted((PS / "cards").glob("*.wav")):
        speech.append((f, (PS / "cards/cards.transcription").read_text()))
    for f in sorted((PS / "tidigits").glob("*.raw")):
        speech.append((f, (PS / "tidigits/tidigits.lsn").read_text()))
    speech_x = [load(path) for path, _ in speech]
    speech_seconds = sum(len(x) for x in speech_x) / RATE
    speech_probs = []
    for (path, transcript), p in zip(speech, many_probs(model, speech_x, workers,
                                                       [f"speech/{p.name}" for p, _ in speech])):
        words = set(transcript.lower().replace("?", " ").replace(".", " ").replace(",", " ").split())
        speech_probs.append((path.name, words, p))
    rng = np.random.default_rng(11)
    bg = []
    for k in range(30):
        x = train.colored_noise(rng, 60 * RATE) * 10 ** (rng.uniform(-70, -15) / 20)
        if k % 3 == 0:
            t = np.arange(len(x)) / RATE
            x = x + 10 ** (rng.uniform(-50, -20) / 20) * np.sin(2 * np.pi * rng.choice([50, 60]) * t)
        bg.append((f"noise{k}", x))
    bg.append(("Noise.wav", load(ALSA / "Noise.wav")))
    bg_seconds = sum(len(x) for _, x in bg) / RATE
    bg_probs = list(zip([name for name, _ in bg], many_probs(model, [x for _, x in bg], workers,
                                                                  [f"bg/{n}" for n, _ in bg])))
    del bg

    prompt_probs, prompt_seconds = {}, {}
    for lang in PROMPT_VOICES:
        items = prompts(lang)
        prompt_seconds[lang] = round(sum(len(x) for _, x, _ in items) / RATE, 1)
        ps = many_probs(model, [x for _, x, _ in items], workers, [f"{lang}/{n}" for n, _, _ in items])
        prompt_probs[lang] = [(name, words, p) for (name, _, words), p in zip(items, ps)]
        del items

    demo_probs = many_probs(model, [load(ROOT / "audio/speech_with_keywords.wav")], 1, ["demo"])[0]
    truth = [line.split("\t") for line in (ROOT / "audio/speech_with_keywords.tsv").read_text().splitlines()[1:]]
    truth = [(float(a), float(b), lab) for a, b, lab in truth]
    return {"pos": pos_probs, "speech": speech_probs, "speech_seconds": speech_seconds, "bg": bg_probs,
            "bg_seconds": bg_seconds, "prompts": prompt_probs, "prompt_seconds": prompt_seconds, "demo": demo_probs,
            "truth": truth}


def wake_traces(model: Path, workers: int) -> dict:
    """Traces for the wake-word threshold: each held-out synthesised "hey sigflow" (synth.HELD_OUT voices) streamed
    on its own, clean and with noise at 10-30 dB SNR (peak 0.3, as in held_out()), and the synthesised running
    speech of synth_running.py (training voices, no keyword; the bundled recipe never trained on it)."""
    index, clips = train.load_corpus()
    wake = [r for r in index if r["held_out"] and r["word"] == WAKE_WORD]
    rng = np.random.default_rng(13)
    clean, noisy = [], []
    for r in wake:
        x = clips[r["file"]]
        x = x / (np.abs(x).max() + 1e-9) * 0.3
        clean.append(x)
        p_sig = np.mean(x[np.abs(x) > 0] ** 2)
        noisy.append(x + train.colored_noise(rng, len(x)) * np.sqrt(p_sig / 10 ** (rng.uniform(10, 30) / 10)))
    names = [r["file"] for r in wake]
    running_index = HERE / "work/running.json"
    if not running_index.is_file():
        sys.exit(f"evaluate.py: {running_index} missing; make it with training/kws/synth_running.py")
    takes = json.loads(running_index.read_text())
    running = [np.load(HERE / "work/running" / r["file"]).astype(np.float64) for r in takes]
    return {
        "clean": many_probs(model, clean, workers, [f"wake/{n}" for n in names]),
        "noisy": many_probs(model, noisy, workers, [f"wake_noisy/{n}" for n in names]),
        "running": [(set(r["text"].lower().split()), p) for r, p in
                    zip(takes, many_probs(model, running, workers, [f"running/{r['file']}" for r in takes]))],
        "running_seconds": sum(len(x) for x in running) / RATE,
    }


def wake_threshold(model: Path, workers: int) -> dict:
    """By wake-word threshold (commands at THRESHOLD, SMOOTH hops): the share of held-out synthesised wake words
    detected, and the false wake words per hour on synthesised running speech."""
    d = wake_traces(model, workers)
    out = {}
    for w in GATED_WAKE:
        found = {cond: sum(any(lab == WAKE_WORD for _, lab, _ in detect(ps, THRESHOLD, SMOOTH, w)) for ps in d[cond])
                 for cond in ("clean", "noisy")}
        false = [lab for words, ps in d["running"] for _, lab, _ in detect(ps, THRESHOLD, SMOOTH, w)
                 if lab not in words]
        wakes = sum(lab == WAKE_WORD for lab in false)
        out[str(w)] = {
            "held_out_wake_words": len(d["clean"]),
            "recall_clean": round(found["clean"] / len(d["clean"]), 3),
            "recall_noisy": round(found["noisy"] / len(d["noisy"]), 3),
            "running_speech_seconds": round(d["running_seconds"], 1),
            "running_speech_false_wake_words": wakes,
            "running_speech_false_wake_words_per_hour": round(wakes / d["running_seconds"] * 3600, 2),
            "running_speech_false_commands_ungated": len(false) - wakes,
        }
    return out


def real(model: Path, workers: int) -> dict:
    d = real_traces(model, workers)
    pos_probs, speech_probs, speech_seconds = d["pos"], d["speech"], d["speech_seconds"]
    bg_probs, bg_seconds, prompt_probs, prompt_seconds = d["bg"], d["bg_seconds"], d["prompts"], d["prompt_seconds"]
    demo_probs, truth = d["demo"], d["truth"]

    def score(thr: float, smooth: int, wake: float | None, listen: float | None = None) -> dict:
        """`listen`: with the wake-word gate (gate()), each set of recordings heard as one stream; recall on the
        real keyword takes stays ungated (none of them has a wake word before it: what a command said within
        `listen` of one gives)."""
        def dets(items):  # detections of each trace of `items`, gated as one stream when `listen` is given
            found = [detect(ps, thr, smooth, wake) for ps in items]
            return gate([(d, len(ps)) for d, ps in zip(found, items)], listen) if listen else found

        # the bundled demo: a keyword counts when detected between its start and 1 s after its end
        det = dets([demo_probs])[0]
        used = set()
        demo_hits = 0
        for a, b, lab in truth:
            for j, (t, l, _) in enumerate(det):
                if j not in used and l == lab and a <= t <= b + 1.0:
                    used.add(j)
                    demo_hits += 1
                    break
        demo_false = [d for j, d in enumerate(det) if j not in used]
        recall = []
        for path, word, ps in pos_probs:
            det = detect(ps, thr, smooth, wake)
            recall.append({"file": path.name, "word": word, "detected": any(lab == word for _, lab, _ in det),
                           "detections": det})
        false_speech = []
        for (name, words, _), found in zip(speech_probs, dets([ps for _, _, ps in speech_probs])):
            for t, label, p in found:
                if label.replace("hey_sigflow", "sigflow") not in words:
                    false_speech.append({"file": name, "time": t, "label": label, "p": round(p, 3)})
        false_bg = []
        for (name, _), found in zip(bg_probs, dets([ps for _, ps in bg_probs])):
            for t, label, p in found:
                false_bg.append({"file": name, "time": t, "label": label, "p": round(p, 3)})
        by_lang, prompt_dets = {}, {}
        for lang, v in prompt_probs.items():
            false = []
            prompt_dets[lang] = dets([ps for _, _, ps in v])
            for (name, words, _), found in zip(v, prompt_dets[lang]):
                for t, label, p in found:
                    if label.replace("hey_sigflow", "sigflow") not in words:
                        false.append({"file": name, "time": t, "label": label, "p": round(p, 3)})
            by_lang[lang] = {"count": len(false), "seconds": prompt_seconds[lang],
                             "per_hour": round(len(false) / prompt_seconds[lang] * 3600, 2), "events": false}
        prompt_false = sum(r["count"] for r in by_lang.values())
        prompt_total = sum(prompt_seconds.values())
        in_sentences = []
        for (name, words, _), found in zip(prompt_probs["en"], prompt_dets["en"]):
            labels = {lab for _, lab, _ in found}
            in_sentences += [{"file": name, "word": k, "detected": k in labels} for k in KEYWORDS if k in words]
        found = sum(r["detected"] for r in in_sentences)
        hits = sum(r["detected"] for r in recall)
        return {
            "demo_speech_with_keywords": {"hits": demo_hits, "keywords": len(truth), "other_detections": demo_false},
            "recall_real": {"hits": hits, "total": len(recall), "recall": round(hits / len(recall), 3),
                            "files": recall},
            "false_accepts_real_speech": {"count": len(false_speech), "seconds": round(speech_seconds, 1),
                                          "per_hour": round(len(false_speech) / speech_seconds * 3600, 1),
                                          "events": false_speech},
            "false_accepts_prompts": {"count": prompt_false, "seconds": round(prompt_total, 1),
                                      "per_hour": round(prompt_false / prompt_total * 3600, 2),
                                      "by_language": by_lang},
            "recall_keywords_in_english_prompts": {"hits": found, "total": len(in_sentences),
                                                   "recall": round(found / len(in_sentences), 3),
                                                   "files": in_sentences},
            "false_accepts_background": {"count": len(false_bg), "seconds": round(bg_seconds, 1),
                                         "per_hour": round(len(false_bg) / bg_seconds * 3600, 2),
                                         "events": false_bg},
        }
    by_threshold = {str(thr): score(thr, SMOOTH, None) for thr in (0.6, 0.7, 0.8, 0.9, 0.95)}
    settings = {}
    for smooth, wake in SETTINGS:
        r = score(THRESHOLD, smooth, wake)
        settings[f"smooth={smooth} wake={wake or THRESHOLD}"] = {
            "threshold": THRESHOLD, "smooth_hops": smooth, "wake_threshold": wake or THRESHOLD,
            "demo_hits": r["demo_speech_with_keywords"]["hits"],
            "demo_other": len(r["demo_speech_with_keywords"]["other_detections"]),
            "recall_real": r["recall_real"]["hits"], "false_accepts_real_speech": r["false_accepts_real_speech"]["count"],
            "false_accepts_background": r["false_accepts_background"]["count"],
            "false_accepts_prompts": r["false_accepts_prompts"]["count"],
            "false_accepts_prompts_wake_word": sum(e["label"] == WAKE_WORD for v in
                                                   r["false_accepts_prompts"]["by_language"].values()
                                                   for e in v["events"]),
            "false_accepts_prompts_per_hour": r["false_accepts_prompts"]["per_hour"],
        }
    gated = {}
    for wake in GATED_WAKE:
        r = score(THRESHOLD, SMOOTH, wake, LISTEN)
        gated[str(wake)] = {
            "threshold": THRESHOLD, "smooth_hops": SMOOTH, "wake_threshold": wake, "listen_s": LISTEN,
            "demo_hits": r["demo_speech_with_keywords"]["hits"],
            "demo_other": r["demo_speech_with_keywords"]["other_detections"],
            "recall_real_ungated": r["recall_real"]["hits"],
            "false_accepts_real_speech": r["false_accepts_real_speech"]["count"],
            "false_accepts_background": r["false_accepts_background"]["count"],
            "false_accepts_prompts": r["false_accepts_prompts"]["count"],
            "false_accepts_prompts_per_hour": r["false_accepts_prompts"]["per_hour"],
            "false_accepts_prompts_events": [dict(e, language=lang) for lang, v in
                                             r["false_accepts_prompts"]["by_language"].items() for e in v["events"]],
        }
    return {"by_threshold": by_threshold, "settings": settings, "wake_word_gate": gated, "smooth_hops": SMOOTH,
            "hysteresis": HYSTERESIS, "refractory_s": REFRACTORY}


def main():
    """Options (for candidates; the defaults reproduce the model card): model=PATH (default models/kws.onnx),
    out=PATH (default training/kws/metrics.json), workers=N (processes for the streaming runs, default 2; the
    numbers do not depend on it), traces=PATH (an .npz of every real recording's probability trace: written after
    the run, and read at the start when it exists, so that a second run with other detection settings skips the
    model runs), wake_model=PATH (the wake word's probability from this model, the rest from model=) with
    wake_traces=PATH (that model's traces, as traces= for model=)."""
    args = {}
    workers = 2
    for a in sys.argv[1:]:
        key, eq, value = a.partition("=")
        if key == "workers" and eq and value.isdigit() and int(value) >= 1:
            workers = int(value)
            continue
        if not eq or key not in ("model", "out", "traces", "wake_model", "wake_traces"):
            sys.exit(f"evaluate.py: bad argument {a!r}; usage: evaluate.py [model=PATH] [out=PATH] [workers=N] "
                     "[traces=PATH] [wake_model=PATH [wake_traces=PATH]]")
        args[key] = Path(value)
    if "wake_traces" in args and "wake_model" not in args:
        sys.exit("evaluate.py: wake_traces= needs wake_model=")
    model = args.get("model", ROOT / "models/kws.onnx")
    wake_model = args.get("wake_model")
    digests = {}
    for m in (model, wake_model):
        if m is not None:
            if not m.is_file():
                sys.exit(f"evaluate.py: model {m}: no such file")
            digests[m] = hashlib.sha256(m.read_bytes()).hexdigest()
    caches = [(args.get("traces"), model, TRACES), (args.get("wake_traces"), wake_model, WAKE_TRACES)]
    for traces, m, cache in caches:
        if traces is not None and traces.is_file():
            with np.load(traces) as z:
                if str(z["model_sha256"]) != digests[m]:
                    sys.exit(f"evaluate.py: {traces} holds the traces of another model (sha256 {z['model_sha256']}, "
                             f"not {digests[m]} of {m}); remove it or name another file")
                cache.update({k: z[k] for k in z.files if k != "model_sha256"})
    if wake_model is not None:
        WAKE_MODEL.append(wake_model)
    sess = session(model)
    out = {"held_out_voices": held_out(sess, session(wake_model) if wake_model else None),
           "real_recordings": real(model, workers), "wake_word_threshold": wake_threshold(model, workers)}
    for traces, m, cache in caches:
        if traces is not None:
            np.savez(traces, model_sha256=np.array(digests[m]), **cache)
    if wake_model is not None:
        out["wake_model"] = str(wake_model)
    if "model" in args:
        out["model"] = str(model)
    args.get("out", HERE / "metrics.json").write_text(json.dumps(out, indent=1) + "\n")
    h = out["held_out_voices"]
    for cond in ("clean", "noisy"):
        print(cond, {k: v for k, v in h[cond].items() if k not in ("confusion", "by_voice")})
        print("  by held-out voice:", ", ".join(f"{g} {v['accuracy']:.3f}" for g, v in h[cond]["by_voice"].items()))
    for thr, r in out["real_recordings"]["by_threshold"].items():
        print(f"threshold {thr}: demo {r['demo_speech_with_keywords']['hits']}/{r['demo_speech_with_keywords']['keywords']} "
              f"(+{len(r['demo_speech_with_keywords']['other_detections'])} other), real recall {r['recall_real']['hits']}/{r['recall_real']['total']}, "
              f"false accepts on real speech {r['false_accepts_real_speech']['count']} in "
              f"{r['false_accepts_real_speech']['seconds']} s, on background {r['false_accepts_background']['count']} "
              f"in {r['false_accepts_background']['seconds']} s")
        fp, ks = r["false_accepts_prompts"], r["recall_keywords_in_english_prompts"]
        print(f"  prompts: {fp['count']} false accepts in {fp['seconds']} s ({fp['per_hour']} per hour; "
              + ", ".join(f"{lang} {v['count']}/{v['seconds']} s" for lang, v in fp["by_language"].items())
              + f"), keywords in English prompts found {ks['hits']}/{ks['total']}")
    for name, r in out["real_recordings"]["settings"].items():
        print(f"threshold {r['threshold']} {name}: demo {r['demo_hits']}/6 (+{r['demo_other']}), real recall "
              f"{r['recall_real']}/7, prompts {r['false_accepts_prompts']} false accepts "
              f"({r['false_accepts_prompts_wake_word']} the wake word, {r['false_accepts_prompts_per_hour']} per hour)")
    for wake, r in out["real_recordings"]["wake_word_gate"].items():
        v = out["wake_word_threshold"][wake]
        print(f"wake-word gate, listen {r['listen_s']} s, wake word at {wake}: demo {r['demo_hits']}/6 "
              f"(+{len(r['demo_other'])}), prompts {r['false_accepts_prompts']} false accepts "
              f"({r['false_accepts_prompts_per_hour']} per hour), real speech {r['false_accepts_real_speech']}, "
              f"background {r['false_accepts_background']}; held-out wake words found {v['recall_clean']} clean, "
              f"{v['recall_noisy']} noisy; synthesised running speech {v['running_speech_false_wake_words']} false "
              f"wake words in {v['running_speech_seconds']} s ({v['running_speech_false_wake_words_per_hour']}/h)")
    print("labels:", LABELS)
    print("confusion (held-out voices, clean, rows = truth):")
    for lab, row in zip(LABELS, h["clean"]["confusion"]):
        print(f"{lab:>12} " + " ".join(f"{v:4d}" for v in row))


if __name__ == "__main__":
    main()
