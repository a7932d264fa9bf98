"""Effects of exposure (MODEL.md section 8): thermal enhancement, tumour cell kill and the marrow surrogate.

- Thermal enhancement ratio TER(T) = exp(beta (T - 37 C)) above 37 C, 1 at or below. It is used once, in the
  kill law (the rate constants of hydrolysis and alkylation keep their own Arrhenius law and no TER).
- Effective exposure AUC_eff = INT TER(T) C dt of the free drug, per node (accumulated by the model).
- Surviving fraction SF = exp(-k AUC_eff); its log10 kill -log10 SF = k AUC_eff / ln 10 is what is kept, as SF
  underflows long before log10 kill stops being meaningful.
- Marrow progenitors: SF = exp(-k_marrow f_u AUC_systemic), on the free drug in the body's plasma.
"""

from __future__ import annotations

import math

import numpy as np

from solver.parameters import T_REF

LOG10_KILL_COVERED = 2.0  # coverage: the volume fraction with SF < 0.01, i.e. log10 kill > 2
T_40 = 313.15  # K: time above 40 C, a regional toxicity surrogate


def thermal_enhancement(T: np.ndarray, beta: float) -> np.ndarray:
    """TER at temperatures T (K): exp(beta (T - 37 C)) above 37 C, 1 at or below."""
    return np.exp(beta * np.maximum(np.asarray(T, dtype=float) - T_REF, 0.0))


def log10_kill(auc_effective: np.ndarray, kill_constant: float) -> np.ndarray:
    """-log10 SF with SF = exp(-k AUC_eff): k (m^3/(kg s)) times AUC_eff (kg s/m^3) over ln 10."""
    return kill_constant * np.asarray(auc_effective) / math.log(10.0)


def marrow_surviving_fraction(auc_systemic_total: float, f_u: float, kill_constant: float) -> float:
    """Surviving fraction of marrow progenitors from the systemic (total plasma) AUC (kg s/m^3) and the plasma's
    unbound fraction: exp(-k f_u AUC)."""
    return math.exp(-kill_constant * f_u * auc_systemic_total)


__all__ = ["LOG10_KILL_COVERED", "T_40", "log10_kill", "marrow_surviving_fraction", "thermal_enhancement"]
