"""Simulated ECG with exact R-peak labels for training and testing the beat detector.

Clean records come from neurokit2's ECGSYN model (random heart rate, variability and P-Q-R-S-T morphology) or its
wavelet model; the R peak of every beat is located on the clean signal (for ECGSYN records in evaluate.py, from the
model's own phase: see clean_record's `labels`). Augmentation then adds what real leads
show: premature ventricular beats (wide, tall, either polarity, with compensatory timing), polarity and gain
changes, baseline offset and wander, muscle noise, power-line hum and motion artefacts. Labels move with the
beats; noise never changes them.

Version 2 fixed three label and morphology bugs of version 1: an R peak was "refined" to the edge of its ±40 ms
window where a small R wave sits on the upstroke from a deep Q wave into a tall T wave (every beat of such a record
was labelled up to 40 ms off its R wave); PVC heights were relative to the R wave even where the normal QRS is an rS
complex with an S wave up to ~10x deeper, so PVCs there were small humps; and at heart rates above ~170 bpm the
blanking of a beat replaced by a PVC erased the next beat's QRS while that beat kept its label.

Version 3 changes only the PVCs, towards how they look in real leads (for training experiments; evaluate.py uses
version 2 unless told otherwise): a PVC is at least as large as the normal QRS's largest deflection (1-3x instead
of 0.5-3x, so no small broad humps); its QRS is wide (Gaussian width 30-50 ms, ~120-200 ms overall, instead of
20-50 ms); its coupling interval is 0.55-0.85 of the RR (instead of 0.65-0.95 with a 250 ms floor) and it never
starts before the end of the preceding beat's T wave (QT from Bazett's formula, 0.42 s x sqrt(RR in s)), so a PVC
is never a bump on a T wave; the next normal beat stays where it was (full compensatory pause, as before). The
number and order of random draws are the same as in version 2; clean records and their labels are identical.

Version 4 is version 3 plus T waves like those of MIT-BIH record 208's normal beats, which retrained models report
as beats (upright, narrower and taller than ECGSYN's, which are ~110 ms wide at half height at 100 bpm): in a share
of the training windows (`reshape_t_waves`, applied by train.py before the PVCs) the T wave of every beat that has
room for it is replaced by a Gaussian bump. One profile per window, drawn at an RR interval of 0.6 s (100 bpm) and
scaled by sqrt(RR / 0.6 s) (Bazett-like): peak 0.18-0.26 s after the R peak, width at half height 55-95 ms; height
0.25-0.6 of the window's QRS size (the median largest deflection within ±50 ms of the R peaks, as for the PVCs), each
beat's height and peak time jittered (x0.9-1.1, ±5 ms). At 80-125 bpm that gives peaks 0.16-0.29 s after R and
widths 49-106 ms. Before the bump is added, the original ST-T segment (from the end of the QRS, the lowest point
10-100 ms after R, to 0.3 RR + 40 ms before the next R) is replaced by a return (time constant 10 ms) to the level
at its end, before the next P wave, with a 40 ms cosine ramp back to the original signal at the end. A beat keeps
its T wave where the bump's ±2 sigma would start before that end of the QRS or end less than 100 ms before the next
R peak, or where the segment would reach past the window; so does every beat of a window whose R wave is smaller
than half the QRS size (rS complexes). Labels do not change (the T waves are negatives). train.py (`sim=4`) reshapes
half of the windows (`t_share=`) with a generator of its own (seed 4), so the clean records (v2's), their labels and
all of v1-v3's draws are unchanged.
"""
from __future__ import annotations

import numpy as np
import neurokit2 as nk
import scipy.integrate

RATE = 360
VERSION = 2  # bumped when the clean records or their labels change (train.py caches them under this name)
# Every function that changed takes `version`: 2 (the default, used by evaluate.py), 1, which reproduces the
# records the bundled models/ecg_beats.onnx was trained on (train.py's default `sim=1`), or 3 (PVCs only, above).
# Version 4 = version 3 + reshape_t_waves (augmentation only, own generator).
CLEAN_VERSION = {1: 1, 2: 2, 3: 2, 4: 2}  # the version whose clean records (and labels) each version uses


def clean_record(rng: np.random.Generator, seconds: float, version: int = VERSION,
                 labels: str = "detector") -> tuple[np.ndarray, np.ndarray]:
    """One clean single-lead record in mV and the sample indices of its R peaks. labels="detector" (train.py's
    records) finds the R peaks on the clean signal (r_peaks_of_clean); labels="phase" (evaluate.py's, since
    2026-12-07) takes an ECGSYN record's R peaks from the model's own phase (ecgsyn_r_peaks), so that a P or T
    wave as tall as the R wave cannot take its label, nor a record lose all its labels to the detector. The draws of
    the record itself are the same either way; later draws (PVCs, noise, the next records) follow the labels' number.
    """
    if labels not in ("detector", "phase"):
        raise ValueError(f"labels={labels!r}: 'detector' or 'phase'")
    hr = float(rng.uniform(38, 190))
    seed = int(rng.integers(1 << 30))
    phase = None
    if rng.random() < 0.85:
        ai = np.array([1.2, -5, 30, -7.5, 0.75]) * rng.uniform([0.2, 0.0, 0.5, 0.0, -1.5], [2.5, 3.0, 1.5, 4.0, 2.5])
        bi = np.array([0.25, 0.1, 0.1, 0.1, 0.4]) * rng.uniform([0.6, 0.7, 0.7, 0.7, 0.6], [1.5, 2.0, 2.2, 2.0, 1.6])
        x, phase = ecgsyn_with_phase(duration=seconds, sampling_rate=RATE, heart_rate=hr,
                                     heart_rate_std=float(rng.uniform(0.5, 8.0)), method="ecgsyn", noise=0,
                                     random_state=seed, ai=tuple(ai), bi=tuple(bi))
    else:
        x = nk.ecg_simulate(duration=seconds, sampling_rate=RATE, heart_rate=min(hr, 150), method="simple",
                            noise=0, random_state=seed)
    x = np.asarray(x, dtype=np.float64)
    x = x - np.median(x)
    if labels == "phase" and phase is not None:
        peaks = ecgsyn_r_peaks(x, phase)
    else:
        peaks = r_peaks_of_clean(x, version)
    r_amp = np.median(x[peaks]) if len(peaks) else 1.0
    x = x / max(abs(r_amp), 1e-3)  # R amplitude 1 (gain is set by augmentation)
    return x, peaks


def ecgsyn_with_phase(**kw) -> tuple[np.ndarray, np.ndarray]:
    """nk.ecg_simulate(method="ecgsyn", **kw) and, per output sample, the phase of ECGSYN's limit cycle (radians;
    the R wave's Gaussian is centred on phase 0). neurokit2 does not return the trajectory, so the ODE solver's
    result is kept as it passes by; the signal is the same as without it."""
    solve = scipy.integrate.solve_ivp
    results = []

    def keeping(*a, **k):
        r = solve(*a, **k)
        results.append(r)
        return r

    scipy.integrate.solve_ivp = keeping
    try:
        x = np.asarray(nk.ecg_simulate(**kw), dtype=np.float64)
    finally:
        scipy.integrate.solve_ivp = solve
    if len(results) != 1 or results[0].y.shape[1] < len(x):
        raise RuntimeError("ecgsyn_with_phase: neurokit2's ECGSYN did not integrate one trajectory of the record's "
                           "length (another neurokit2 version?)")
    y = results[0].y
    return x, np.arctan2(y[1], y[0])[:len(x)]  # one lead, internal rate = output rate: sample i is step i


def ecgsyn_r_peaks(x: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """R peaks of an ECGSYN record from its phase: at each upward crossing of phase 0 (the R wave's centre), the
    local maximum of the signal nearest to it within ±40 ms (the crossing itself if there is none)."""
    up = np.flatnonzero((phase[:-1] < 0) & (phase[1:] >= 0) & (np.abs(phase[1:]) < 1.0)) + 1
    w = int(0.04 * RATE)
    out = []
    for c in up:
        a, b = max(1, c - w), min(len(x) - 1, c + w + 1)
        s = x[a:b]
        local = a + np.flatnonzero((s >= x[a - 1:b - 1]) & (s >= x[a + 1:b + 1]))
        out.append(int(local[np.argmin(np.abs(local - c))]) if len(local) else int(c))
    return np.unique(np.asarray(out, dtype=np.int64))


def r_peaks_of_clean(x: np.ndarray, version: int = VERSION) -> np.ndarray:
    """R peaks of a noise-free simulated ECG: neurokit2's detector, refined to the highest local maximum within
    ±40 ms. Only true local maxima count: where the signal keeps rising through the window (a small R wave between
    a deep Q and a tall T), the window's edge is no peak, and neurokit2's own index is kept."""
    _, info = nk.ecg_peaks(x, sampling_rate=RATE, method="neurokit")
    p = np.asarray(info["ECG_R_Peaks"], dtype=np.int64)
    w = int(0.04 * RATE)
    out = []
    for i in p:
        if version == 1:  # the plain argmax of version 1 (may return the window's edge)
            a, b = max(0, i - w), min(len(x), i + w + 1)
            out.append(a + int(np.argmax(x[a:b])))
            continue
        a, b = max(1, i - w), min(len(x) - 1, i + w + 1)
        s = x[a:b]
        local = np.flatnonzero((s >= x[a - 1:b - 1]) & (s >= x[a + 1:b + 1]))
        out.append(a + int(local[np.argmax(s[local])]) if len(local) else int(i))
    return np.unique(np.asarray(out, dtype=np.int64))


def add_pvcs(rng: np.random.Generator, x: np.ndarray, peaks: np.ndarray,
             with_pvcs: float | None = None, version: int = VERSION) -> tuple[np.ndarray, np.ndarray]:
    """Replace a random share of beats by premature ventricular complexes (wide QRS, discordant T). Half of the
    calls add none; `with_pvcs` sets another probability of adding some (training oversamples them)."""
    if with_pvcs is None:
        share = rng.choice([0.0, rng.uniform(0.05, 0.5)])
    else:
        share = float(rng.uniform(0.05, 0.5)) if rng.random() < with_pvcs else 0.0
    if share == 0.0 or len(peaks) < 3:
        return x, peaks
    x = x.copy()
    # PVC heights are relative to the normal QRS's largest deflection: the R wave (1 after clean_record), or the S or
    # Q wave where that is deeper than the R is tall (rS and QS-like complexes, up to ~10x), so that PVCs are not
    # dwarfed by the normal beats' S waves.
    w = int(0.05 * RATE)
    qrs_size = float(np.median([np.max(np.abs(x[max(0, p - w):p + w + 1])) for p in peaks])) if version >= 2 else 1.0
    new_peaks = list(peaks)
    for k in range(1, len(peaks) - 1):
        if rng.random() >= share:
            continue
        rr = peaks[k] - peaks[k - 1]
        # Blank the normal beat (QRS and T) by a straight line between the window edges; at high heart rates the
        # window stops short of the next beat's QRS (which keeps its label) instead of erasing it.
        a = max(0, peaks[k] - int(0.12 * RATE))
        b = min(len(x) - 1, peaks[k] + int(0.35 * RATE))
        if version >= 2:
            b = min(b, peaks[k + 1] - int(0.06 * RATE))
        x[a:b + 1] = np.linspace(x[a], x[b], b - a + 1)
        early = rng.uniform(0.05, 0.35)
        if version >= 3:
            # coupling interval 0.55-0.85 of the RR, and never before the end of the previous beat's T wave
            # (Bazett: QT = 0.42 s * sqrt(RR in s)); the next normal beat stays put (full compensatory pause)
            prev_rr = (peaks[k - 1] - peaks[k - 2]) if k >= 2 else rr
            pos = int(peaks[k - 1] + (0.90 - early) * rr)
            pos = max(pos, peaks[k - 1] + int(0.42 * np.sqrt(prev_rr / RATE) * RATE))
        else:
            pos = int(peaks[k] - early * rr)
            pos = max(pos, peaks[k - 1] + int(0.25 * RATE))
        lo, hi = max(0, pos - int(0.3 * RATE)), min(len(x), pos + int(0.6 * RATE))
        t = (np.arange(lo, hi) - pos) / RATE
        sign = rng.choice([-1.0, 1.0])
        # Gaussian width; v3: 30-50 ms, a QRS of ~120-200 ms (v1/v2: 20-50 ms)
        width = rng.uniform(0.03 if version >= 3 else 0.02, 0.05)
        amp = rng.uniform(1.0 if version >= 3 else 0.5, 3.0) * qrs_size
        qrs = amp * np.exp(-0.5 * (t / width) ** 2)
        # a biphasic wing makes the complex look like real PVCs (notched/slurred)
        qrs -= rng.uniform(0.0, 0.5) * amp * np.exp(-0.5 * ((t - 1.6 * width) / width) ** 2)
        # discordant repolarisation: often deeper and longer than the QRS is tall (as in MIT-BIH 208's PVCs)
        tw = -rng.uniform(0.2, 2.0) * amp * np.exp(-0.5 * ((t - rng.uniform(0.12, 0.3)) / rng.uniform(0.04, 0.12)) ** 2)
        x[lo:hi] += sign * (qrs + tw)
        c = pos - lo
        new_peaks[k] = lo + max(0, c - 20) + int(np.argmax(qrs[max(0, c - 20):c + 21]))
    return x, np.asarray(sorted(new_peaks), dtype=np.int64)


def reshape_t_waves(rng: np.random.Generator, x: np.ndarray, peaks: np.ndarray, share: float = 0.5) -> np.ndarray:
    """Version 4: with probability `share`, replace the T wave of every beat of the window that has room for it by
    an upright, narrow Gaussian bump like MIT-BIH 208's (see the module docstring for the ranges). `rng` must be a
    generator of its own (its draws must not shift those of versions 1-3). Labels (`peaks`) do not change."""
    if rng.random() >= share or len(peaks) < 2:
        return x
    # one profile per window, at RR = 0.6 s; scaled by sqrt(RR / 0.6 s) per beat
    height = rng.uniform(0.25, 0.6)
    fwhm = rng.uniform(0.055, 0.095)
    lag = rng.uniform(0.18, 0.26)
    w = int(0.05 * RATE)
    sizes = [np.max(np.abs(x[max(0, p - w):p + w + 1])) for p in peaks]
    qrs_size = float(np.median(sizes))
    if np.median(x[peaks]) < 0.5 * qrs_size:
        return x  # rS-like complexes: a T wave 0.25-0.6 of the S depth would tower over the R wave
    x = x.copy()
    n = len(x)
    rr_med = float(np.median(np.diff(peaks)))
    ramp = int(0.04 * RATE)
    for k, p in enumerate(peaks):
        h_j, lag_j = rng.uniform(0.9, 1.1), rng.uniform(-0.005, 0.005)
        rr = float(peaks[k + 1] - p) if k + 1 < len(peaks) else rr_med
        q = p + rr  # the next R peak (estimated at the window's end)
        s = np.sqrt(rr / RATE / 0.6)
        sigma = fwhm * s / 2.3548 * RATE
        tpk = p + (lag * s + lag_j) * RATE
        # the end of the QRS: the lowest point 10-100 ms after R (the S wave's trough, or the valley between the R
        # and the old T wave); from there the signal returns to the level before the next P wave (time constant
        # 10 ms) and stays there, the old T wave removed; 40 ms cosine ramp back to the original signal at the end
        j0, j1 = p + int(0.01 * RATE), p + int(0.10 * RATE)
        if j1 >= n:
            continue
        a0 = j0 + int(np.argmin(x[j0:j1]))
        b1 = int(q - (0.3 * rr + 0.04 * RATE))
        if b1 - a0 < 3 * ramp or tpk + 2 * sigma > q - 0.1 * RATE or tpk - 2 * sigma < a0 or b1 >= n:
            continue
        seg = np.arange(a0, b1 + 1)
        taper = np.ones(len(seg))
        taper[len(seg) - ramp:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
        iso = x[b1]
        base = iso + (x[a0] - iso) * np.exp(-(seg - a0) / (0.01 * RATE))
        x[a0:b1 + 1] -= taper * (x[a0:b1 + 1] - base)
        lo, hi = max(0, int(tpk - 4 * sigma)), min(n, int(tpk + 4 * sigma) + 1)
        t = np.arange(lo, hi)
        x[lo:hi] += h_j * height * qrs_size * np.exp(-0.5 * ((t - tpk) / sigma) ** 2)
    return x


def distort(rng: np.random.Generator, x: np.ndarray, level: float | None = None,
            log_gain: tuple[float, float] | None = None) -> np.ndarray:
    """Gain, polarity, offset, baseline wander, muscle noise, hum and motion artefacts. `level` in [0, 1] scales
    the noise (random when None). The gain is uniform in [0.3, 3] (the evaluation's records), or log-uniform in
    `log_gain` = (low, high) when given (one draw either way, so the later draws keep their place)."""
    n = len(x)
    t = np.arange(n) / RATE
    lvl = rng.uniform(0, 1) if level is None else level
    gain = rng.uniform(0.3, 3.0) if log_gain is None else float(np.exp(rng.uniform(*np.log(log_gain))))
    y = x * gain * (-1.0 if rng.random() < 0.15 else 1.0)
    y = y + rng.uniform(-1.5, 1.5)
    for _ in range(rng.integers(1, 4)):
        y = y + lvl * rng.uniform(0, 0.6) * np.sin(2 * np.pi * rng.uniform(0.05, 0.6) * t + rng.uniform(0, 6.3))
    white = rng.standard_normal(n)
    # muscle noise: white noise high-passed by a first difference, scaled
    emg = np.diff(white, prepend=0.0) * lvl * rng.uniform(0, 0.08)
    y = y + emg + white * lvl * rng.uniform(0, 0.03)
    if rng.random() < 0.5:
        y = y + lvl * rng.uniform(0, 0.15) * np.sin(2 * np.pi * rng.choice([50.0, 60.0]) * t + rng.uniform(0, 6.3))
    if rng.random() < 0.3 * lvl:
        for _ in range(rng.integers(1, 4)):
            c = rng.integers(0, n)
            w = rng.uniform(0.1, 0.6) * RATE
            y = y + rng.uniform(-1.5, 1.5) * lvl * np.exp(-0.5 * ((np.arange(n) - c) / w) ** 2)
    return y.astype(np.float32)


def target(peaks: np.ndarray, n: int, delay: int, half_width: int) -> np.ndarray:
    """Per-sample label: 1 within ±half_width of each R peak, shifted `delay` samples later (the causal model
    reports a beat `delay` samples after it happened)."""
    y = np.zeros(n, dtype=np.float32)
    for p in peaks:
        c = p + delay
        a, b = max(0, c - half_width), min(n, c + half_width + 1)
        if a < b:
            y[a:b] = 1.0
    return y
