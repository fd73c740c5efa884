"""sigflow's log-mel front end, in numpy: the definition the Rust `log-mel` front end (src/dsp) implements.

Training scripts compute their features with this module so that a model trained here sees exactly what the
streaming `cnn` stage feeds it. The Rust side tests itself against fixtures made from this file.

Definition (all frames are complete; nothing is padded):
  frame t      = x[t*hop : t*hop + n_fft]                     (frames start at sample 0)
  window       = periodic Hann of length n_fft: 0.5 - 0.5*cos(2*pi*n/n_fft)
  power        = |rfft(frame * window)|^2                     (n_fft/2 + 1 bins)
  mel filters  = triangular on the HTK mel scale m = 2595*log10(1 + f/700), n_mels filters with edges equally
                 spaced in mel between f_min and f_max (default 0 .. rate/2), peak 1, no area normalisation;
                 bin k sits at frequency k*rate/n_fft
  output       = ln(mel_power + 1e-6), shape [n_mels, frames]
"""
import numpy as np

LOG_GUARD = 1e-6


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_filterbank(rate, n_fft, n_mels, f_min=0.0, f_max=None):
    """[n_mels, n_fft//2 + 1] triangular filters (float64)."""
    f_max = rate / 2.0 if f_max is None else f_max
    edges = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    freqs = np.arange(n_fft // 2 + 1) * rate / n_fft
    fb = np.zeros((n_mels, n_fft // 2 + 1))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (freqs - lo) / (mid - lo)
        down = (hi - freqs) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(up, down))
    return fb


def n_frames(n_samples, n_fft, hop):
    return 0 if n_samples < n_fft else 1 + (n_samples - n_fft) // hop


def logmel(x, rate, n_fft=400, hop=160, n_mels=40, f_min=0.0, f_max=None):
    """Log-mel features of a mono signal: float32 [n_mels, frames]."""
    x = np.asarray(x, dtype=np.float64)
    t = n_frames(len(x), n_fft, hop)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)
    fb = mel_filterbank(rate, n_fft, n_mels, f_min, f_max)
    if t == 0:
        return np.zeros((n_mels, 0), dtype=np.float32)
    idx = np.arange(n_fft)[None, :] + hop * np.arange(t)[:, None]
    spec = np.abs(np.fft.rfft(x[idx] * window, axis=1)) ** 2
    return np.log(spec @ fb.T + LOG_GUARD).T.astype(np.float32)
