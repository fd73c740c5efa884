"""CPU-independent numerics for the simulated ECG records (imported before numpy).

neurokit2's ECGSYN integrates an ODE whose output over 60 s drifts visibly (tens of microvolts, R peaks moved) with
the last-bit rounding of OpenBLAS's CPU-specific dot kernels, and numpy's SIMD sin/exp round differently with AVX2
and AVX-512. ENV pins both to code paths every x86-64 machine runs alike (and one BLAS thread). It must be in the
environment before numpy, and so OpenBLAS, is loaded: apply() refuses to run once numpy is imported.
"""
from __future__ import annotations

import os
import sys

ENV = {"OPENBLAS_CORETYPE": "Prescott", "OPENBLAS_NUM_THREADS": "1",
       "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"}


def apply(caller: str) -> None:
    """Set ENV for this process; `caller` names the script in the error if numpy was loaded first."""
    if "numpy" in sys.modules and any(os.environ.get(k) != v for k, v in ENV.items()):
        sys.exit(f"{caller}: numpy was imported before the portable numerics could be set")
    os.environ.update(ENV)
