"""Default physical parameters (../shared/MODEL.md section 9), as unit strings with their sources.

Tags: [V] read in a published source, [R] commonly quoted, not re-checked, [C] derived, [A] an
assumption of ours, documented in docs/model.md. Every value can be overridden per region in a case.
"""

from __future__ import annotations

REGIONS = ("tumour", "necrosis", "muscle", "fat", "skin", "bone")
BOUNDARIES = ("skin_surface", "proximal", "distal")

# Per-region tissue parameters. Keys are the case-file keys under [tissue.<region>].
_NORMAL = {
    "K": "6.4e-15 m^2/(Pa s)",  # Baxter & Jain 1989, muscle [R]
    "Lp": "2.7e-12 m/(Pa s)",  # [R]
    "S_V": "7.0e3 1/m",  # [R]
    "sigma_p": 0.91,  # [R]
    "pi_v": "20 mmHg",  # [R]
    "pi_i": "10 mmHg",  # [R]; human subcutis 10-15 mmHg [V]
    "p_v": "15.6 mmHg",  # effective capillary pressure at rest [R]
    # [C] calibrated on resting lymph flow (MODEL.md section 2): 6.5 uL/(g h), the middle of muscle's 3-10, with
    # this region's Starling parameters (LL = q LpS/(LpS pe - q), q the flow per volume); fat and bone as muscle [A]
    "LL": "2.6e-9 1/(Pa s)",
    "p_L": "0 mmHg",  # [A] lymphatic pressure
    "phi": 0.2,  # interstitial volume fraction [A]
    "phi_c": 0.7,  # cell volume fraction [A]
    "albumin_ratio": 0.27,  # interstitial/plasma albumin, human muscle (Ellmerer 2000) [V]
    "blood_volume": 0.03,  # blood volume fraction of tissue, for tissue drug as the clinic measures it [R]
    "density": "1090 kg/m^3",
    "conductivity": "0.49 W/(m K)",
    "heat_capacity": "3421 J/(kg K)",
    "perfusion": "37 mL/(min kg)",  # baseline perfusion [R]
    "metabolic_heat": "0.9 W/kg",  # [R]
}

TISSUE_DEFAULTS: dict[str, dict[str, object]] = {
    "muscle": dict(_NORMAL),
    "fat": {
        **_NORMAL,
        "density": "911 kg/m^3",
        "conductivity": "0.21 W/(m K)",
        "heat_capacity": "2348 J/(kg K)",
        "perfusion": "33 mL/(min kg)",
        "metabolic_heat": "0.3 W/kg",  # [A]
        "phi": 0.1,  # [A] adipocytes hold little water: small interstitial and cell water fractions
        "phi_c": 0.1,  # [A]
        "albumin_ratio": 0.15,  # human adipose tissue (Ellmerer 2000) [V]
    },
    "skin": {
        **_NORMAL,
        "density": "1109 kg/m^3",
        "conductivity": "0.37 W/(m K)",
        "heat_capacity": "3391 J/(kg K)",
        "perfusion": "106 mL/(min kg)",
        "metabolic_heat": "0.9 W/kg",  # [A]
        "albumin_ratio": 0.4,  # [A] dermal interstitium, between muscle and lymph
        "LL": "1.7e-8 1/(Pa s)",  # [C] calibrated on 25 uL/(g h), the middle of skin's 10-40 at rest
    },
    "bone": {
        **_NORMAL,
        "K": "1e-16 m^2/(Pa s)",  # [A] nearly impermeable cortical bone
        "S_V": "1e3 1/m",  # [A]
        "phi": 0.05,  # [A]
        "phi_c": 0.1,  # [A]
        "density": "1908 kg/m^3",
        "conductivity": "0.32 W/(m K)",
        "heat_capacity": "1313 J/(kg K)",
        "perfusion": "10 mL/(min kg)",  # [A]
        "metabolic_heat": "0.1 W/kg",  # [A]
    },
    "tumour": {
        **_NORMAL,
        "K": "3.1e-14 m^2/(Pa s)",  # Baxter & Jain 1989 [R]
        "Lp": "2.1e-11 m/(Pa s)",  # [R]
        "S_V": "2.0e4 1/m",  # [V]
        "sigma_p": 0.82,  # [R]
        "pi_v": "20 mmHg",
        "pi_i": "15 mmHg",  # [R]
        "p_v": "25 mmHg",  # [R]/[V] upper end: hypertensive tumour vessels
        "LL": "0 1/(Pa s)",  # no functional lymphatics in tumour
        "phi": 0.3,  # [A]
        "phi_c": 0.6,  # [A]
        "density": "1050 kg/m^3",
        "conductivity": "0.52 W/(m K)",
        "heat_capacity": "3540 J/(kg K)",
        "perfusion": "47 mL/(min kg)",  # [C] Lang et al. 0.833 kg/(m^3 s) at 37 C
        "metabolic_heat": "1.0 W/kg",  # [A]
        "albumin_ratio": 0.5,  # [C] up to 0.75 from pi_i/pi_v (MODEL.md section 4)
        "blood_volume": 0.05,  # [R] tumour vascular volume
    },
    "necrosis": {
        **_NORMAL,
        "K": "3.1e-14 m^2/(Pa s)",
        "Lp": "0 m/(Pa s)",  # no vessels
        "S_V": "0 1/m",
        "LL": "0 1/(Pa s)",
        "phi": 0.5,  # [A]
        "phi_c": 0.2,  # [A]
        "density": "1050 kg/m^3",
        "conductivity": "0.52 W/(m K)",
        "heat_capacity": "3540 J/(kg K)",
        "perfusion": "0 mL/(min kg)",
        "metabolic_heat": "0 W/kg",
        "albumin_ratio": 0.5,  # [A] as the viable tumour
        "blood_volume": 0.0,  # no vessels
    },
}

# Effects (MODEL.md section 8), for every agent unless its case or defaults say otherwise. Melphalan's values:
# TER(T) = exp(ter_beta (T - 37 C)) above 37 C, 0.13 /C [C] (crosslinks x1.9 at 42 vs 37 C, human melanoma cultures);
# surviving fraction exp(-k AUC_eff): tumour k 1.0 mL/(ug h) [C] (a calibration parameter, range 0.1-3), marrow
# progenitors (CFU-GM, 1-h LD50 0.9 ug/mL) 1.0 mL/(ug h) [C]. For the other agents the same values are [A].
EFFECT_DEFAULTS: dict[str, object] = {
    "ter_beta": "0.13 1/K",
    "kill_constant": "1.0 mL/(ug*h)",
    "marrow_kill_constant": "1.0 mL/(ug*h)",
}

# Drug agents. Keys are the case-file keys under [agents.<name>].
AGENT_DEFAULTS: dict[str, dict[str, object]] = {
    "melphalan": {
        "D": "2.4e-10 m^2/s",  # [C] Swabb: effective, per tissue volume (flux D grad C; not multiplied by phi)
        "P": "2.4e-8 m/s",  # [C] pore theory, weak
        "sigma_d": 0.0,  # [C]
        "f_u": 0.22,  # unbound fraction in plasma [C from Nath 2010 CL/CLu]; the perfusate's follows its albumin
        "half_life": "66 min",  # hydrolysis at 37 C [V]
        "Ea": "60.7 kJ/mol",  # [V] hydrolysis
        "Ea_alkylation": "60.7 kJ/mol",  # [C] alkylation, like hydrolysis, goes through the aziridinium ion
        "Ea_uptake": "50 kJ/mol",  # [R] carrier (LAT1) uptake
        "k_up": "1e-3 1/s",  # [A] membrane uptake rate (LAT1 transport)
        "kappa": 10.0,  # [V] cell/medium equilibrium ratio 6-17 (Dufour 1985): the range's geometric middle
        "alkylation_half_life": "120 min",  # [A] DNA alkylation of intracellular drug at 37 C
        "molar_mass": "305.2 g/mol",  # [V]
        **EFFECT_DEFAULTS,  # [C]
    },
    "actinomycin_d": {
        "D": "1.1e-10 m^2/s",  # [C] Stokes-Einstein from MW 1255
        "P": "1.0e-8 m/s",  # [A]
        "sigma_d": 0.0,
        "f_u": 0.3,  # [A] in plasma
        "half_life": "36 h",  # [A] chemically stable over a perfusion
        "Ea": "50 kJ/mol",  # [A]
        "Ea_alkylation": "50 kJ/mol",  # [A]
        "Ea_uptake": "50 kJ/mol",  # [A]
        "k_up": "5e-4 1/s",  # [A]
        "kappa": 5.0,  # [A] intercalator, accumulates in cells
        "alkylation_half_life": "60 min",  # [A] binding to DNA
        "molar_mass": "1255.4 g/mol",  # [V]
        **EFFECT_DEFAULTS,  # [A] as melphalan
    },
    "doxorubicin": {
        "D": "1.6e-10 m^2/s",  # [C]
        "P": "1.5e-8 m/s",  # [A]
        "sigma_d": 0.0,
        "f_u": 0.25,  # [A] in plasma
        "half_life": "24 h",  # [A]
        "Ea": "50 kJ/mol",  # [A]
        "Ea_alkylation": "50 kJ/mol",  # [A]
        "Ea_uptake": "50 kJ/mol",  # [A]
        "k_up": "1e-3 1/s",  # [A]
        "kappa": 10.0,  # [A]
        "alkylation_half_life": "60 min",  # [A]
        "molar_mass": "543.5 g/mol",  # [V]
        **EFFECT_DEFAULTS,  # [A] as melphalan
    },
}

BLOOD = {"density": "1060 kg/m^3", "heat_capacity": "3617 J/(kg K)"}  # [R]
GAS_CONSTANT = 8.314462618  # J/(mol K)
T_REF = 310.15  # K, 37 C: reference temperature of rate constants
