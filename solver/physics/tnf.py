"""TNF-alpha switch on tumour vessels (MODEL.md section 6).

From the TNF time, tumour vascular properties move towards their TNF values with time constant tau:
s(t) = 1 - exp(-(t - t_TNF)/tau). Lp and P rise, sigma_p falls, K rises, tumour flow falls.

The interstitial pressure collapse is modelled explicitly. Raising Lp S/V and lowering sigma_p alone
would RAISE the Baxter-Jain plateau pe = p_v - sigma_p (pi_v - pi_i). TNF also collapses tumour vessels
and halves tumour blood flow, which lowers the effective vascular pressure: we set
p_v(t) = pe_0 (1 - r s(t)) + sigma_p(t) (pi_v - pi_i), so that the plateau falls by the configured
fraction r (``ifp_reduction``; rat IFP -75 to -87 %). Conductivity K rising (matrix breakdown) lowers
the pressure further near the rim.
"""

from __future__ import annotations

import math

from solver.case import TNF, TissueParams


def progress(tnf: TNF, t: float) -> float:
    """s(t) in [0, 1): fraction of the TNF effect reached at time t (s)."""
    return 0.0 if t < tnf.time else 1.0 - math.exp(-(t - tnf.time) / tnf.tau)


def tumour_values(tnf: TNF, base: TissueParams, s: float) -> dict[str, float]:
    """Tumour parameters at effect fraction s: Lp, sigma_p, K, p_v (Pa) and multipliers P, flow."""

    def ramp(factor: float) -> float:
        return 1.0 + (factor - 1.0) * s

    sigma = base.sigma_p * ramp(tnf.reflection_factor)
    pe_0 = base.p_v - base.sigma_p * (base.pi_v - base.pi_i)
    return {
        "Lp": base.Lp * ramp(tnf.permeability_factor),
        "sigma_p": sigma,
        "K": base.K * ramp(tnf.conductivity_factor),
        "p_v": pe_0 * (1.0 - tnf.ifp_reduction * s) + sigma * (base.pi_v - base.pi_i),
        "P_factor": ramp(tnf.permeability_factor),  # multiplies the drug's vascular permeability P
        "flow_factor": ramp(tnf.flow_factor),
    }
