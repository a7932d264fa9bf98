"""An independent model of a well-mixed limb: the equations of MODEL.md sections 2-5 for a uniform limb (no
gradients), coded separately from the engine as ODEs and solved with scipy (Radau, tight tolerances).

Used by tests/test_delivery.py: on a single-region limb with no-flux boundaries and uniform initial values the
3D engine must reduce to exactly these ODEs. Nothing here imports the engine's physics.

State (all concentrations kg/m^3, amounts kg): T tissue temperature (K); C free interstitial drug, Cc
intracellular, A adducts (per tissue volume); Cp perfusate (total), Cs systemic (total); M_pool drug in the
limb lymph pool; X_p, X_s tracer concentrations; hydrolysed, cleared, washed, leaked running totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.integrate import solve_ivp

R_GAS = 8.314462618
T_REF = 310.15


def arrhenius(k37: float, Ea: float, T: float) -> float:
    return k37 * math.exp(-Ea / R_GAS * (1.0 / T - 1.0 / T_REF))


def exchange(Jv: float, PS: float, omega: float, sigma_d: float, f_u: float) -> tuple[float, float]:
    """(a, b) with Phi_v = a C_plasma - b C: binding-aware Renkin-Crone with the Peclet factor (MODEL.md 4)."""
    PS_b = omega / f_u * (1.0 - math.exp(-f_u * PS / omega)) if omega > 0 else 0.0
    conv = Jv * (1.0 - sigma_d)
    if PS_b <= 0:
        return f_u * max(conv, 0.0), 0.0
    Pe = conv / PS_b
    f = 1.0 - Pe / 2 + Pe**2 / 12 if abs(Pe) < 1e-3 else Pe / math.expm1(Pe)
    return f_u * (conv + PS_b * f), PS_b * f


@dataclass
class WellMixed:
    """Parameters of a uniform limb and its protocol (SI)."""

    V_t: float  # tissue volume (m^3)
    phi: float
    phi_c: float
    B: float  # interstitial albumin binding: bound = B C
    rho_c: float  # tissue volumetric heat capacity (J/(m^3 K))
    rho_b_c_b: float  # blood volumetric heat capacity
    Q_m: float  # metabolic heat (W/m^3)
    Jv: float  # filtration (1/s), uniform steady
    lymph: float  # JL/V (1/s)
    PS: float  # P S/V (1/s)
    sigma_d: float
    f_u_plasma: float
    f_u_perfusate: float
    k_h37: float
    k_alk37: float
    Ea: float  # hydrolysis
    Ea_alk: float
    Ea_up: float
    k_up: float
    kappa: float
    V_p: float
    V_s: float
    CL: float
    Q: float  # circuit flow (m^3/s)
    Q_wash: float
    omega_rest: float  # perfusion after release (1/s)
    leak: float  # leak rate (1/s, fraction of V_p)
    T0: float
    T_a: float  # inflow temperature during isolation (K)
    t_perfusion: float
    t_washout: float  # duration
    dose: float  # kg at t = 0
    Jv_rest: float  # filtration and lymph after release (capillary pressure back to rest)
    lymph_rest: float
    # TNF (MODEL.md section 6): effect E(t) = e (1 - exp(-(t - t_TNF)/tau)); P x (1 + (P_factor - 1) E) and a
    # perfusate leak q = tnf_leak E exchanging plasma with the interstitium: + q (C_plasma - C/f_u)
    tnf_effect: float = 0.0  # e, the dose response
    tnf_time: float = 0.0
    tnf_tau: float = 1.0
    P_factor: float = 1.0
    tnf_leak: float = 0.0

    def tnf(self, t: float) -> float:
        return self.tnf_effect * -math.expm1(-(t - self.tnf_time) / self.tnf_tau) if t >= self.tnf_time else 0.0

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        T, C, Cc, A, Cp, Cs, M_pool, Xp, Xs, hyd, clr, wsh = y
        release = self.t_perfusion + self.t_washout
        isolated = t < release
        washing = self.t_perfusion <= t < release
        omega = (self.Q_wash if washing else self.Q) / self.V_t if isolated else self.omega_rest
        T_in = self.T_a if isolated else T_REF
        dT = (self.rho_b_c_b * omega * (T_in - T) + self.Q_m) / self.rho_c
        k_h, k_alk = arrhenius(self.k_h37, self.Ea, T), arrhenius(self.k_alk37, self.Ea_alk, T)
        f_u = self.f_u_perfusate if isolated else self.f_u_plasma
        Jv, lymph = (self.Jv, self.lymph) if isolated else (self.Jv_rest, self.lymph_rest)
        E = self.tnf(t)
        a, b = exchange(Jv, self.PS * (1 + (self.P_factor - 1) * E), omega, self.sigma_d, f_u)
        a, b = a + self.tnf_leak * E, b + self.tnf_leak * E / f_u
        C_plasma = Cp if isolated else Cs
        vascular = a * C_plasma - b * C  # into tissue, per volume
        uptake = arrhenius(self.k_up, self.Ea_up, T) * (C - Cc / self.kappa)
        lymph_out = lymph * (1 + self.B) * C
        dC = (vascular - lymph_out - self.phi * k_h * C - uptake) / (self.phi * (1 + self.B))
        dCc = (uptake - self.phi_c * (k_h + k_alk) * Cc) / self.phi_c
        dA = self.phi_c * k_alk * Cc
        k_hp = arrhenius(self.k_h37, self.Ea, self.T_a)  # perfusate at the inflow temperature
        Q_leak = self.leak * self.V_p if isolated else 0.0  # the tourniquet leaks until release
        Q_out = self.Q_wash if washing else 0.0
        if isolated:
            dCp = (-self.V_t * vascular - f_u * k_hp * self.V_p * Cp - Q_leak * (Cp - Cs) - Q_out * Cp) / self.V_p
            dM_pool = self.V_t * lymph_out
            dCs = (Q_leak * (Cp - Cs) - self.CL * Cs) / self.V_s
        else:
            dCp, dM_pool = 0.0, 0.0
            dCs = (-self.V_t * vascular + self.V_t * lymph_out - self.CL * Cs) / self.V_s
        dXp = -Q_leak * (Xp - Xs) / self.V_p if isolated else 0.0
        dXs = Q_leak * (Xp - Xs) / self.V_s if isolated else 0.0
        dhyd = self.V_t * (self.phi * k_h * C + self.phi_c * k_h * Cc) + (f_u * k_hp * self.V_p * Cp if isolated else 0)
        return np.array([dT, dC, dCc, dA, dCp, dCs, dM_pool, dXp, dXs, dhyd, self.CL * Cs, Q_out * Cp])

    def solve(self, t_end: float, times: np.ndarray) -> dict[str, np.ndarray]:
        """The state at ``times`` (s), with the release at the end of washout as a discontinuity."""
        release = self.t_perfusion + self.t_washout
        y0 = np.array([self.T0, 0, 0, 0, self.dose / self.V_p, 0, 0, 1.0 / self.V_p, 0, 0, 0, 0], dtype=float)
        out = np.zeros((len(times), len(y0)))
        pieces = [(0.0, self.t_perfusion), (self.t_perfusion, release), (release, t_end)]
        y = y0
        for k, (t0, t1) in enumerate(pieces):
            if t1 <= t0:
                continue
            if k == 2:  # release: blood and lymph-pool drug go to the body
                y = y.copy()
                y[5] += (self.V_p * y[4] + y[6]) / self.V_s
                y[4], y[6] = 0.0, 0.0
            sol = solve_ivp(self.rhs, (t0, t1), y, method="Radau", rtol=1e-10, atol=1e-16, dense_output=True)
            assert sol.success, sol.message
            inside = ((times >= t0) if k == 0 else (times > t0)) & (times <= t1)
            if inside.any():
                out[inside] = sol.sol(times[inside]).T
            y = sol.y[:, -1]
        names = ["T", "C", "Cc", "A", "Cp", "Cs", "M_pool", "Xp", "Xs", "hydrolysed", "cleared", "washed"]
        return {name: out[:, i] for i, name in enumerate(names)}
