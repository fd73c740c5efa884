#!/usr/bin/env python3
"""Convert the MIT-BIH record 208 excerpt shipped in the scipy 1.13.1 wheel (scipy/misc/ecg.dat) into
audio/mitbih208_excerpt.wav: 360 Hz, mono, 32-bit float samples in millivolts.

    pip download --no-deps --only-binary=:all: --python-version 3.11 scipy==1.13.1 -d training/work/wheels
    python3 training/ecg/make_ecg_wav.py training/work/wheels/scipy-1.13.1-*.whl

Needs only numpy (any 1.x/2.x). The file inside the wheel is an npz archive with one uint16 array `ecg`;
millivolts = (raw - 1024) / 200 (the record's ADC zero and gain).
"""
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

RATE = 360


def load_from_wheel(wheel: str) -> np.ndarray:
    with zipfile.ZipFile(wheel) as z:
        data = z.read("scipy/misc/ecg.dat")
    raw = np.load(io.BytesIO(data))["ecg"]
    return ((raw.astype(np.float64) - 1024.0) / 200.0).astype(np.float32)


def write_float_wav(path: Path, x: np.ndarray, rate: int) -> None:
    """Mono IEEE-float WAV (format tag 3) with a `fact` chunk."""
    pcm = x.astype("<f4").tobytes()
    fmt = (
        (3).to_bytes(2, "little") + (1).to_bytes(2, "little") + rate.to_bytes(4, "little")
        + (rate * 4).to_bytes(4, "little") + (4).to_bytes(2, "little") + (32).to_bytes(2, "little")
        + (0).to_bytes(2, "little")
    )
    fact = len(x).to_bytes(4, "little")
    body = (b"WAVE" + b"fmt " + len(fmt).to_bytes(4, "little") + fmt
            + b"fact" + len(fact).to_bytes(4, "little") + fact
            + b"data" + len(pcm).to_bytes(4, "little") + pcm)
    path.write_bytes(b"RIFF" + len(body).to_bytes(4, "little") + body)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    x = load_from_wheel(sys.argv[1])
    out = Path(__file__).resolve().parents[2] / "audio" / "mitbih208_excerpt.wav"
    write_float_wav(out, x, RATE)
    print(f"{out}: {len(x)} samples, {len(x) / RATE:.1f} s, {x.min():.3f}..{x.max():.3f} mV")


if __name__ == "__main__":
    main()
