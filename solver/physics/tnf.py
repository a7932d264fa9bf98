"""TNF-alpha on tumour vessels (MODEL.md section 6, version 2).

Effect in time and dose: E(t) = s(t) e(c), with s(t) = 1 - exp(-(t - t_TNF)/tau) from the TNF time and a dose
response on the TNF concentration in the perfusate c = dose / circulating volume,

    e(c) = (c - c_threshold)+ / ((c - c_threshold)+ + c_half),

no effect below the threshold (rat: synergy lost below 10 ug per 5 mL, de Wilt 1999), saturating above it
(sarcoma: 1 mg as effective as higher doses). Every tumour property moves by ``1 + (factor - 1) E``.

Default mechanism, a tumour-selective vascular leak (TNF raised rat tumour melphalan x6 with IFP and pH
unchanged, Hoving 2006):
- the free drug's vascular permeability P rises (``permeability_factor``);
- perfusate leaks into the tumour interstitium and back at ``perfusate_leak`` E (q, 1/s per tumour volume),
  carrying its free and albumin-bound drug: Phi_leak = q (C_p - C / f_u), C_p the total perfusate
  concentration, C the interstitial free one; the returning fluid carries the interstitial free drug and the
  bound drug of the perfusate's albumin. The interstitial albumin level (B) is kept: the leak brings the
  perfusate's drug, not a lasting change of interstitial albumin. At equilibrium C = f_u C_p, as for the free
  path, so the leak speeds the tumour towards the perfusate; it cannot push it past.
The fluid balance is untouched by default, so the tumour IFP stays as it was.

Options (factors 1 and ``ifp_reduction`` 0 by default): tumour flow (``flow_factor``), and an IFP collapse with
an explicit mechanism: the effective vascular pressure is lowered so that the Baxter-Jain plateau
pe = p_v - sigma_p (pi_v - pi_i) falls by ``ifp_reduction`` E, p_v(t) = pe_0 (1 - r E) + sigma_p(t) (pi_v - pi_i)
(raising Lp S/V and lowering sigma_p alone would RAISE the plateau), beside the wall and matrix changes
``hydraulic_factor`` (Lp), ``reflection_factor`` (sigma_p) and ``conductivity_factor`` (K).
"""

from __future__ import annotations

import math

from solver.case import TNF, TissueParams

PRESSURE_KEYS = ("Lp", "sigma_p", "K", "p_v")  # tumour properties of the pressure equation
EXCHANGE_KEYS = ("P_factor", "tnf_leak")  # of the drug's exchange only


def progress(tnf: TNF, t: float) -> float:
    """s(t) in [0, 1): fraction of the TNF effect's onset reached at time t (s)."""
    return 0.0 if t < tnf.time else 1.0 - math.exp(-(t - tnf.time) / tnf.tau)


def dose_response(tnf: TNF, perfusate_volume: float) -> float:
    """e in [0, 1): the effect of the case's dose in ``perfusate_volume`` (m^3), from threshold and half effect."""
    above = max(tnf.dose / perfusate_volume - tnf.threshold, 0.0)
    return above / (above + tnf.half_effect)


def moves_pressure(tnf: TNF) -> bool:
    """Whether TNF changes the pressure equation (an option is on): else the IFP is not re-solved."""
    factors = (tnf.hydraulic_factor, tnf.reflection_factor, tnf.conductivity_factor)
    return tnf.ifp_reduction > 0.0 or any(f != 1.0 for f in factors)


def tumour_values(tnf: TNF, base: TissueParams, effect: float) -> dict[str, float]:
    """Tumour values at effect E = ``effect``: Lp, sigma_p, K, p_v (SI) for the pressure equation; the
    multipliers of P and of tumour flow; the perfusate leak (1/s)."""

    def ramp(factor: float) -> float:
        return 1.0 + (factor - 1.0) * effect

    sigma = base.sigma_p * ramp(tnf.reflection_factor)
    pe_0 = base.p_v - base.sigma_p * (base.pi_v - base.pi_i)
    return {
        "Lp": base.Lp * ramp(tnf.hydraulic_factor),
        "sigma_p": sigma,
        "K": base.K * ramp(tnf.conductivity_factor),
        "p_v": pe_0 * (1.0 - tnf.ifp_reduction * effect) + sigma * (base.pi_v - base.pi_i),
        "P_factor": ramp(tnf.permeability_factor),
        "flow_factor": ramp(tnf.flow_factor),
        "tnf_leak": tnf.perfusate_leak * effect,
    }


__all__ = ["EXCHANGE_KEYS", "PRESSURE_KEYS", "dose_response", "moves_pressure", "progress", "tumour_values"]
