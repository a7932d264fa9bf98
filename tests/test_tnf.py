"""TNF v2 (MODEL.md section 6, issue 13): the dose response by hand, and the rat ILP validation case's
TNF / no-TNF tumour melphalan against the band this mechanism can give (Hoving 2006 measured x6)."""

from __future__ import annotations

import tomllib

import pytest
from mpi4py import MPI

from solver.case import parse_case_tree
from solver.physics import tnf as tnf_switch
from solver.simulation import run_case

from .conftest import CASES

RAT = CASES / "rat-ilp-tnf" / "case.toml"


def _rat(**tnf_changes) -> dict:
    raw = tomllib.loads(RAT.read_text())
    raw["mesh"]["size_factor"] = 2.0  # coarser than the case's: a ratio, not a converged value
    raw["numerics"]["dt"] = "1 min"
    raw["output"]["interval"] = "30 min"
    raw["output"]["formats"] = []
    raw["protocol"]["tnf"].update(tnf_changes)
    return raw


def test_dose_response_by_hand():
    """e = (c - c_thr)+ / ((c - c_thr)+ + c_half), c = dose / perfusate volume: 50 ug in 5 mL with the rat's
    2 mg/L threshold and half effect gives 8/(8 + 2) = 0.8; 9 ug in 5 mL (below the threshold) gives nothing."""
    case = parse_case_tree(_rat(), RAT)
    tnf = case.protocol.tnf
    assert tnf_switch.dose_response(tnf, 5e-6) == pytest.approx(0.8, rel=1e-12)
    low = tnf.model_copy(update={"dose": 9e-9})
    assert tnf_switch.dose_response(low, 5e-6) == 0.0
    assert not tnf_switch.moves_pressure(tnf)  # IFP unchanged by default (Hoving 2006)
    assert tnf_switch.moves_pressure(tnf.model_copy(update={"ifp_reduction": 0.5}))
    values = tnf_switch.tumour_values(tnf, case.tissue["tumour"], 0.5)
    assert values["P_factor"] == pytest.approx(1 + 0.35 * 0.5) and values["tnf_leak"] == pytest.approx(0.01 / 60)
    assert values["p_v"] == pytest.approx(case.tissue["tumour"].p_v, rel=1e-12)


@pytest.mark.slow
@pytest.mark.serial
def test_rat_ilp_tnf_raises_tumour_melphalan_within_what_the_leak_allows(tmp_path):
    """Rat ILP (BN175-like tumour, 30 min, 38-39 C, melphalan 40 ug, TNF 50 ug): TNF raises tumour melphalan
    at the end of perfusion and leaves muscle alone. The band is this mechanism's, not the measurement's:
    at full effect the default leak (2 %/min) and P x1.35 roughly double the tumour's exchange rate, reached
    about 10 min after TNF, so the ratio lies between 1.1 and 2 (1.32 on the case's mesh); Hoving's x6 is not
    reached (docs/plausibility.md says why)."""
    comm = MPI.COMM_WORLD
    with_tnf = run_case(parse_case_tree(_rat(), RAT), tmp_path / "tnf", comm, quiet=True)
    raw = _rat()
    raw["protocol"].pop("tnf")
    without = run_case(parse_case_tree(raw, RAT), tmp_path / "plain", comm, quiet=True)
    a, b = with_tnf.summary["regions"], without.summary["regions"]
    ratio = a["tumour"]["tissue_drug_ug_per_g"] / b["tumour"]["tissue_drug_ug_per_g"]
    assert 1.1 < ratio < 2.0, ratio
    assert a["muscle"]["tissue_drug_ug_per_g"] == pytest.approx(b["muscle"]["tissue_drug_ug_per_g"], rel=0.02)
    assert a["tumour"]["log10_kill_mean"] > b["tumour"]["log10_kill_mean"]
    probes = with_tnf.summary["probe_temperature_degC"]
    assert 38.0 <= probes["min"] <= probes["max"] <= 39.0  # the rat model's 38-39 C
