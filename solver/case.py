"""Case files: a validated schema for ``cases/<name>/case.toml``.

A case is read on rank 0, validated with pydantic (unknown keys are errors, dimensional values must be
strings with units), converted to SI and broadcast. Any error is raised on every rank as a
:class:`CaseError` whose message is one line: file, key path, value and what was expected.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from solver import units as U
from solver.parameters import AGENT_DEFAULTS, BOUNDARIES, EFFECT_DEFAULTS, REGIONS, TISSUE_DEFAULTS


class CaseError(ValueError):
    """A case file is invalid. The message is one line, ready to print."""


def Q(dim: U.Dimension, *constraints: Any) -> Any:
    """Type of a dimensional case value: a unit string converted to SI float (``dim.si_unit``)."""
    return Annotated[float, BeforeValidator(dim.to_si), dim, *constraints]


SAFE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")  # names that reach file and array names (agents)
MAX_NAME = 64

NonNeg = Field(ge=0)
Pos = Field(gt=0)
Fraction = Annotated[float, Field(ge=0, le=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- mesh
class Sarcoma(Strict):
    """A deep soft-tissue sarcoma: an ellipsoid in the muscle, optionally with a necrotic core."""

    semi_axes: tuple[Q(U.LENGTH, Pos), Q(U.LENGTH, Pos), Q(U.LENGTH, Pos)]
    axial_position: Fraction = 0.5  # 0 = distal end, 1 = proximal end
    radial_offset: Q(U.LENGTH, NonNeg)  # distance of the centre from the limb axis
    angle: Q(U.ANGLE) = 0.0
    necrotic_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.0  # core semi-axes / tumour semi-axes


class Nodules(Strict):
    """In-transit melanoma nodules: spheres in skin and subcutis."""

    count: Annotated[int, Field(ge=1, le=50)]
    radius: Q(U.LENGTH, Pos)
    axial_range: tuple[Fraction, Fraction] = (0.2, 0.6)
    seed: int = 1


class LimbMesh(Strict):
    """A tapered cylinder with bone, muscle, fat and skin layers (z from distal 0 to proximal L)."""

    generator: Literal["limb"]
    preset: Literal["leg", "arm"]
    length: Q(U.LENGTH, Pos) | None = None
    proximal_radius: Q(U.LENGTH, Pos) | None = None
    distal_radius: Q(U.LENGTH, Pos) | None = None
    bone_radius: Q(U.LENGTH, Pos) | None = None
    fat_thickness: Q(U.LENGTH, Pos) | None = None
    skin_thickness: Q(U.LENGTH, Pos) | None = None
    sarcoma: Sarcoma | None = None
    nodules: Nodules | None = None
    size_factor: Annotated[float, Field(gt=0.05, le=20)] = 1.0
    refine: Annotated[int, Field(ge=0, le=4)] = 0  # uniform refinements in parallel after meshing (8x cells each)
    # Graded mesh (MODEL.md section 1): cell sizes before size_factor; None takes the preset's value.
    size_coarse: Q(U.LENGTH, Pos) | None = None  # bulk muscle and bone, far from every layer
    size_skin: Q(U.LENGTH, Pos) | None = None  # through skin and subcutis (and at the bone surface)
    size_tumour: Q(U.LENGTH, Pos) | None = None  # at the tumour, necrotic-core and nodule surfaces
    tumour_layer: Q(U.LENGTH, NonNeg) | None = None  # distance from those surfaces kept at size_tumour
    grading: Annotated[float, Field(ge=0.05, le=2)] = 0.3  # cell-size growth per unit distance beyond a layer


class SphereMesh(Strict):
    """Benchmark: a tumour sphere, optionally inside a host shell (region ``muscle``).

    Boundary ``outer`` is the outermost sphere.
    """

    generator: Literal["sphere"]
    radius: Q(U.LENGTH, Pos)
    outer_radius: Q(U.LENGTH, Pos) | None = None
    cell_size: Q(U.LENGTH, Pos)
    size_factor: Annotated[float, Field(gt=0.05, le=20)] = 1.0
    refine: Annotated[int, Field(ge=0, le=4)] = 0  # uniform refinements in parallel after meshing (8x cells each)
    # Graded mesh: ``rim_size`` at the tumour surface (r = radius), kept to ``rim_layer`` on both sides, growing
    # by ``grading`` per unit distance to ``cell_size``; none of them: uniform ``cell_size``.
    rim_size: Q(U.LENGTH, Pos) | None = None
    rim_layer: Q(U.LENGTH, NonNeg) = 0.0
    grading: Annotated[float, Field(ge=0.05, le=2)] = 0.3


class SlabMesh(Strict):
    """Benchmark: a box [0,Lx]x[0,Ly]x[0,Lz] of one region; boundaries ``x0``, ``x1``, ``sides``."""

    generator: Literal["slab"]
    size: tuple[Q(U.LENGTH, Pos), Q(U.LENGTH, Pos), Q(U.LENGTH, Pos)]
    region: Literal[REGIONS] = "muscle"  # type: ignore[valid-type]
    cell_size: Q(U.LENGTH, Pos)
    size_factor: Annotated[float, Field(gt=0.05, le=20)] = 1.0
    refine: Annotated[int, Field(ge=0, le=4)] = 0  # uniform refinements in parallel after meshing (8x cells each)
    # Graded mesh: ``boundary_size`` at the boundary a layer forms on (slab: x0; cylinder: skin_surface), kept to
    # ``boundary_layer`` from it, growing by ``grading`` per unit distance to ``cell_size``.
    boundary_size: Q(U.LENGTH, Pos) | None = None
    boundary_layer: Q(U.LENGTH, NonNeg) = 0.0
    grading: Annotated[float, Field(ge=0.05, le=2)] = 0.3


class CylinderMesh(Strict):
    """Benchmark: a plain cylinder of one region; boundaries ``skin_surface``, ``proximal``, ``distal``."""

    generator: Literal["cylinder"]
    radius: Q(U.LENGTH, Pos)
    length: Q(U.LENGTH, Pos)
    region: Literal[REGIONS] = "muscle"  # type: ignore[valid-type]
    cell_size: Q(U.LENGTH, Pos)
    size_factor: Annotated[float, Field(gt=0.05, le=20)] = 1.0
    refine: Annotated[int, Field(ge=0, le=4)] = 0  # uniform refinements in parallel after meshing (8x cells each)
    # Graded mesh: ``boundary_size`` at the boundary a layer forms on (slab: x0; cylinder: skin_surface), kept to
    # ``boundary_layer`` from it, growing by ``grading`` per unit distance to ``cell_size``.
    boundary_size: Q(U.LENGTH, Pos) | None = None
    boundary_layer: Q(U.LENGTH, NonNeg) = 0.0
    grading: Annotated[float, Field(ge=0.05, le=2)] = 0.3


class FileMesh(Strict):
    """An external mesh (gmsh .msh or any meshio format) with cell-data region ids mapped to names."""

    generator: Literal["file"]
    path: str
    regions: dict[Literal[REGIONS], int]  # type: ignore[valid-type]
    boundaries: dict[str, int] = {}
    scale: Annotated[float, Field(gt=0)] = 1.0  # multiply coordinates by this to get metres
    refine: Annotated[int, Field(ge=0, le=4)] = 0  # uniform refinements in parallel after reading (8x cells each)


class SurfacesMesh(Strict):
    """One closed surface per region (STL, OBJ, PLY or any meshio format), meshed with gmsh (solver.mesh_surfaces).

    Regions are nested (an inner surface makes a cavity in the region around it) or touch along shared triangles.
    ``axis`` points along the limb from the distal to the proximal end: the exterior faces lying across it at its
    ends are the ``distal`` and ``proximal`` cuts, the rest ``skin_surface``. Cell sizes are the limb preset's.
    """

    generator: Literal["surfaces"]
    surfaces: dict[Literal[REGIONS], str | list[str]]  # type: ignore[valid-type]
    scale: Annotated[float, Field(gt=0)] = 1.0  # multiply coordinates by this to get metres (0.001: mm)
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)
    # a cut named by a surface file instead (open or closed): the exterior faces lying on it
    cuts: dict[Literal["proximal", "distal"], str] = {}
    preset: Literal["leg", "arm"] = "leg"  # cell sizes of this limb preset
    size_factor: Annotated[float, Field(gt=0.05, le=20)] = 1.0

    @model_validator(mode="after")
    def _axis(self) -> SurfacesMesh:
        if not any(self.axis):
            raise ValueError("axis: expected a direction (distal to proximal), not (0, 0, 0)")
        return self


class LabelsMesh(Strict):
    """A labelled image (NIfTI) and the region of each label value (solver.mesh_labels; needs nibabel).

    Spacing, orientation and units come from the image header; ``axis`` is in the image's world (RAS) frame.
    """

    generator: Literal["labels"]
    path: str
    labels: dict[Literal[REGIONS], Annotated[int, Field(gt=0)]]  # type: ignore[valid-type]
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)  # RAS z: inferior (distal) to superior (proximal)
    smoothing_iterations: Annotated[int, Field(ge=0, le=200)] = 6  # 0: the staircase of the voxels
    preset: Literal["leg", "arm"] = "leg"
    size_factor: Annotated[float, Field(gt=0.05, le=20)] = 1.0

    @model_validator(mode="after")
    def _axis(self) -> LabelsMesh:
        if not any(self.axis):
            raise ValueError("axis: expected a direction (distal to proximal), not (0, 0, 0)")
        return self


MeshSpec = Annotated[
    LimbMesh | SphereMesh | SlabMesh | CylinderMesh | FileMesh | SurfacesMesh | LabelsMesh,
    Field(discriminator="generator"),
]


# ---------------------------------------------------------------------------------------- parameters
class TissueParams(Strict):
    """Per-region tissue parameters (SI after validation). Defaults: solver.parameters."""

    K: Q(U.HYDRAULIC_CONDUCTIVITY, NonNeg)
    Lp: Q(U.FILTRATION_COEFFICIENT, NonNeg)
    S_V: Q(U.SURFACE_DENSITY, NonNeg)
    sigma_p: Fraction
    pi_v: Q(U.PRESSURE)
    pi_i: Q(U.PRESSURE)
    p_v: Q(U.PRESSURE)
    LL: Q(U.LYMPH_COEFFICIENT, NonNeg)
    p_L: Q(U.PRESSURE)
    phi: Annotated[float, Field(gt=0, le=1)]
    phi_c: Fraction
    albumin_ratio: Annotated[float, Field(ge=0, le=1)]  # interstitial/plasma albumin r (binding B = r (1-f_u)/f_u)
    blood_volume: Fraction  # blood volume fraction (tissue drug as the clinic measures it)
    density: Q(U.DENSITY, Pos)
    conductivity: Q(U.THERMAL_CONDUCTIVITY, Pos)
    heat_capacity: Q(U.HEAT_CAPACITY, Pos)
    perfusion: Q(U.SPECIFIC_PERFUSION, NonNeg)
    metabolic_heat: Q(U.SPECIFIC_POWER, NonNeg)


class AgentParams(Strict):
    """Parameters of one drug agent (SI after validation)."""

    D: Q(U.DIFFUSIVITY, Pos)
    P: Q(U.PERMEABILITY, NonNeg)
    sigma_d: Fraction
    f_u: Annotated[float, Field(gt=0, le=1)]  # unbound fraction in plasma
    half_life: Q(U.TIME, Pos)
    Ea: Q(U.MOLAR_ENERGY, NonNeg)  # activation energy of hydrolysis (tissue and perfusate)
    Ea_alkylation: Q(U.MOLAR_ENERGY, NonNeg)  # of DNA alkylation of intracellular drug
    Ea_uptake: Q(U.MOLAR_ENERGY, NonNeg)  # of membrane uptake (carrier transport)
    k_up: Q(U.RATE, NonNeg)
    kappa: Annotated[float, Field(gt=0)]
    alkylation_half_life: Q(U.TIME, Pos)
    molar_mass: Q(U.MOLAR_MASS, Pos)
    ter_beta: Q(U.THERMAL_SENSITIVITY, NonNeg)  # thermal enhancement ratio exp(beta (T - 37 C)) above 37 C
    kill_constant: Q(U.KILL_CONSTANT, NonNeg)  # tumour cells: SF = exp(-k AUC_eff)
    marrow_kill_constant: Q(U.KILL_CONSTANT, NonNeg)  # marrow progenitors (CFU-GM), on the free systemic AUC


# ---------------------------------------------------------------------------------------- boundaries
class NoFlux(Strict):
    type: Literal["no_flux"]


class FixedValue(Strict):
    type: Literal["fixed"]
    value: str  # converted by the equation that uses it (pressure, temperature or concentration)


class Robin(Strict):
    """-k dT/dn = h (T - T_ambient)."""

    type: Literal["robin"]
    h: Q(U.HEAT_TRANSFER, NonNeg)
    ambient: Q(U.TEMPERATURE, Pos)


class BoundarySpec(Strict):
    pressure: Annotated[NoFlux | FixedValue, Field(discriminator="type")] | None = None
    heat: Annotated[NoFlux | FixedValue | Robin, Field(discriminator="type")] | None = None
    drug: Annotated[NoFlux | FixedValue, Field(discriminator="type")] | None = None


# ------------------------------------------------------------------------------------------ protocol
class TemperaturePoint(Strict):
    time: Q(U.TIME, NonNeg)
    value: Q(U.TEMPERATURE, Pos)


class Dose(Strict):
    """A bolus into the perfusate: an absolute amount or an amount per litre of limb volume."""

    agent: str
    time: Q(U.TIME, NonNeg)
    amount: Q(U.MASS, Pos) | None = None
    per_limb_volume: Q(U.CONCENTRATION, Pos) | None = None

    @model_validator(mode="after")
    def _one_amount(self) -> Dose:
        if (self.amount is None) == (self.per_limb_volume is None):
            raise ValueError("give exactly one of 'amount' or 'per_limb_volume'")
        return self


class TNF(Strict):
    """TNF-alpha on tumour vessels (MODEL.md section 6; solver.physics.tnf). The effect E(t) = s(t) e(dose) grows
    from the TNF time with time constant ``tau`` (s = 1 - exp(-(t - t_TNF)/tau)) to a dose response e that
    saturates with TNF per volume of perfusate above a threshold. Each factor moves the tumour's value by
    1 + (factor - 1) E.

    Default mechanism, tumour-selective vascular leak: free-drug permeability up (``permeability_factor``) and
    perfusate (free and albumin-bound drug) exchanged with the tumour interstitium (``perfusate_leak``). IFP is
    unchanged (rat ILP, Hoving 2006). Options, off by default: tumour flow fall (``flow_factor``), and an IFP
    collapse (``ifp_reduction``: the effective vascular pressure is lowered so that the Baxter-Jain plateau
    falls by this fraction) with its vessel-wall and matrix changes (``hydraulic_factor`` on Lp,
    ``reflection_factor`` on sigma_p, ``conductivity_factor`` on K).
    """

    dose: Q(U.MASS, Pos)
    time: Q(U.TIME, NonNeg)
    tau: Q(U.TIME, Pos)
    threshold: Q(U.CONCENTRATION, NonNeg) = 1e-4  # 0.1 mg/L of perfusate: below it no effect [A]
    half_effect: Q(U.CONCENTRATION, Pos) = 5e-5  # 0.05 mg/L above the threshold gives half the effect [A]
    permeability_factor: Annotated[float, Field(gt=0)] = 1.35  # free-drug P (x1.35; x1.65 with 40 C) [V]
    perfusate_leak: Q(U.RATE, NonNeg) = 0.02 / 60.0  # perfusate exchanged per tumour volume, 2 %/min [A]
    flow_factor: Annotated[float, Field(gt=0)] = 1.0  # option: tumour flow (0.47-0.65 at 1 h in mice [V])
    ifp_reduction: Annotated[float, Field(ge=0, lt=1)] = 0.0  # option: rat IFP -75 to -87 % [R]
    hydraulic_factor: Annotated[float, Field(gt=0)] = 1.0  # option: Lp
    reflection_factor: Annotated[float, Field(gt=0, le=1)] = 1.0  # option: sigma_p
    conductivity_factor: Annotated[float, Field(gt=0)] = 1.0  # option: K


class Blanket(Strict):
    temperature: Q(U.TEMPERATURE, Pos)
    h: Q(U.HEAT_TRANSFER, Pos)


class TemperatureControl(Strict):
    """Probe-controlled inflow temperature (MODEL.md section 5; solver.physics.control): a PI controller sets the
    heat-exchanger outlet during perfusion so that the probes' mean follows ``target``. Probes default to four
    points in the subcutis at the tumour's level (limb meshes)."""

    target: Annotated[list[TemperaturePoint], Field(min_length=1)]  # piecewise linear, held beyond its ends
    probes: Annotated[list[tuple[Q(U.LENGTH), Q(U.LENGTH), Q(U.LENGTH)]], Field(min_length=1)] | None = None
    max_inflow: Q(U.TEMPERATURE, Pos) = 315.15  # 42 C: Minor 1985 heated the perfusate to 42 C [V]
    min_inflow: Q(U.TEMPERATURE, Pos) = 308.15  # 35 C
    max_rate: Q(U.HEATING_RATE, Pos) = 1.0 / 60.0  # 1 K/min [A]
    gain: Annotated[float, Field(gt=0, le=100)] = 3.0  # K of inflow per K of probe error [A]
    integral_time: Q(U.TIME, Pos) = 600.0  # 10 min [A]


class Metabolism(Strict):
    """ILI metabolic state (MODEL.md section 7; solver.physics.metabolism)."""

    oxygen_consumption: Q(U.VOLUME_RATE, NonNeg)  # O2 (STP volume) per tissue mass per time, at 37 C
    initial_oxygen: Q(U.VOLUME, NonNeg)  # O2 (STP volume) in the trapped blood at the start
    buffer_capacity: Q(U.MOLAR_CONCENTRATION, Pos) = 38.0  # of blood, per pH unit: 36-41 mmol/L [C]
    ecw_fraction: Fraction = 0.15  # the limb's extracellular water / limb volume [R]
    # of the acid between blood and ECW: 28 min, calibrated on the leg ILI's pH at 30 min (Beasley 2012: 7.15;
    # docs/plausibility.md section 3), the arm then predicted
    ecw_exchange_time: Q(U.TIME, Pos) = 28 * 60.0
    lactate_per_oxygen: Annotated[float, Field(gt=0)] = 0.33  # mol lactic acid per mol O2 shortfall [C]
    initial_ph: Annotated[float, Field(gt=6, lt=8)] = 7.4
    q10: Annotated[float, Field(ge=1)] = 2.0  # temperature factor of O2 demand per 10 K [R]
    potentiation: Annotated[float, Field(ge=1)] = 1.0  # uptake factor at full acidosis (1: off)


class Protocol(Strict):
    kind: Literal["ILP", "ILI"]
    flow: Q(U.FLOW, NonNeg)
    prime_volume: Q(U.VOLUME, Pos)
    limb_blood_fraction: Annotated[float, Field(ge=0, le=0.3)] = 0.05  # limb blood volume / limb volume
    perfusion_duration: Q(U.TIME, Pos)  # circulation from t = 0 to end of perfusion
    washout_duration: Q(U.TIME, NonNeg)
    washout_flow: Q(U.FLOW, NonNeg)
    end_time: Q(U.TIME, Pos)  # end of the simulation
    # fraction of perfusate volume per unit time exchanged with the body until release; default 0.045 %/min,
    # the modern TM-ILP median (MODEL.md section 3); 0.32 %/min is a leaky perfusion (Rauschecker 1991)
    leak_rate: Q(U.RATE, NonNeg) = 0.045e-2 / 60.0
    # perfusate albumin / plasma albumin: the perfusate's unbound fraction follows, f_u,p = 1/(1 + ratio (1 -
    # f_u)/f_u); 0.55 gives melphalan 0.34 (blood-diluted prime [C]); a crystalloid prime is about 0.03
    perfusate_albumin_ratio: Annotated[float, Field(ge=0, le=1.5)] = 0.55
    systemic_volume: Q(U.VOLUME, Pos)
    systemic_clearance: Q(U.FLOW, NonNeg)
    capillary_pressure: Q(U.PRESSURE) | None = None  # perfused p_v (ILP: 35 mmHg) in these regions:
    capillary_pressure_regions: list[Literal[REGIONS]] = ["muscle", "fat", "skin", "bone"]  # type: ignore[valid-type]
    initial_temperature: Q(U.TEMPERATURE, Pos)
    inflow_temperature: list[TemperaturePoint] = []  # perfusate schedule, piecewise linear
    blanket: Blanket | None = None  # on the skin, replacing its condition (ILI; optional in ILP)
    temperature_control: TemperatureControl | None = None  # inflow set by the probes during perfusion
    doses: list[Dose]
    tnf: TNF | None = None
    metabolism: Metabolism | None = None

    @model_validator(mode="after")
    def _times(self) -> Protocol:
        if self.end_time < self.perfusion_duration + self.washout_duration:
            raise ValueError(
                f"end_time = {self.end_time / 60:g} min: must cover perfusion_duration + washout_duration"
                f" ({(self.perfusion_duration + self.washout_duration) / 60:g} min)"
            )
        for i, dose in enumerate(self.doses):
            if dose.time >= self.perfusion_duration:
                raise ValueError(
                    f"doses[{i}].time = {dose.time / 60:g} min: the dose of {dose.agent} must fall before the"
                    f" perfusion ends (perfusion_duration = {self.perfusion_duration / 60:g} min)"
                )
        return self


# ---------------------------------------------------------------------------- physics, numerics, output
class Physics(Strict):
    pressure: bool = True
    heat: Literal["off", "steady", "transient"] = "transient"
    drug: bool = True
    temperature_dependent_perfusion: bool = False


class Numerics(Strict):
    dt: Q(U.TIME, Pos)
    end_time: Q(U.TIME, Pos) | None = None  # simulated time of a case without a protocol (default: one step)
    degree: Annotated[int, Field(ge=1, le=2)] = 1
    stabilisation: bool = True
    mass_lumping: bool = True  # drug transport at P1: lumped zero-order terms keep concentrations >= 0
    petsc: dict[Literal["pressure", "heat", "transport"], dict[str, str | int | float | bool]] = {}


class Output(Strict):
    folder: str = "results"
    interval: Q(U.TIME, Pos) | None = None
    # "log10_kill": log10 kill of tumour cells by each agent (nodal), the report's kill slice
    fields: list[Literal["p", "u", "T", "C", "C_c", "A", "AUC", "CEM43", "log10_kill"]] = [
        "p",
        "u",
        "T",
        "C",
        "C_c",
        "A",
        "AUC",
        "CEM43",
        "log10_kill",
    ]
    formats: list[Literal["vtx", "vtkhdf", "xdmf"]] = ["vtx", "vtkhdf", "xdmf"]


class Case(Strict):
    """A whole case, in SI units after validation."""

    title: str
    mesh: MeshSpec
    tissue: dict[Literal[REGIONS], TissueParams] = {}  # type: ignore[valid-type]
    agents: dict[str, AgentParams] = {}
    boundaries: dict[str, BoundarySpec] = {}
    protocol: Protocol | None = None
    physics: Physics = Physics()
    numerics: Numerics
    output: Output = Output()

    @model_validator(mode="after")
    def _references(self) -> Case:
        for i, dose in enumerate(self.protocol.doses if self.protocol else []):
            if dose.agent not in self.agents:
                raise ValueError(
                    f"protocol.doses[{i}].agent = {dose.agent!r}: no such agent; expected one of {sorted(self.agents)}"
                )
        return self


# -------------------------------------------------------------------------------------------- loading
def _with_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill tissue parameters of every region and agent parameters of known agents from defaults."""
    raw = dict(raw)
    tissue = raw.get("tissue", {})
    if isinstance(tissue, dict):
        filled = {}
        for region in REGIONS:
            given = tissue.get(region, {})
            filled[region] = {**TISSUE_DEFAULTS[region], **given} if isinstance(given, dict) else given
        filled.update({k: v for k, v in tissue.items() if k not in REGIONS})  # rejected later
        raw["tissue"] = filled
    agents = raw.get("agents", {})
    if isinstance(agents, dict):
        raw["agents"] = {
            name: {**EFFECT_DEFAULTS, **AGENT_DEFAULTS.get(name, {}), **given} if isinstance(given, dict) else given
            for name, given in agents.items()
        }
    return raw


# Tags of the discriminated unions: pydantic puts them in an error's location, the case file does not have them.
_UNION_TAGS = {
    "mesh": {"limb", "sphere", "slab", "cylinder", "file", "surfaces", "labels"},
    **{kind: {"no_flux", "fixed", "robin"} for kind in ("pressure", "heat", "drug")},
}


def key_path(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as the key path of the case file: ``protocol.doses[0].time``, ``mesh.radius``."""
    out = ""
    previous = ""
    for part in loc:
        text = str(part)
        if text.startswith("function-") or (previous in _UNION_TAGS and text in _UNION_TAGS[previous]):
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{text}" if out else text)
        previous = text
    return out


def _one_line(path: Path, err: ValidationError, raw: dict[str, Any]) -> str:
    errors = err.errors()
    # a misspelt key is reported as the unknown key, not as the missing key it was meant to be
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = key_path(tuple(first["loc"]))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{path}: unknown key '{loc}' (value {first['input']!r}); check the spelling or remove it"
    if first["type"] == "missing":
        return f"{path}: missing key '{loc}'"
    if not loc:  # a check across keys: the message names them
        return f"{path}: {msg}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" = {_shown(value)}"
    return f"{path}: {loc}{shown}: {msg}"


def _shown(value: object) -> str:
    """A value for a one-line message: repr, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def parse_case(path: Path) -> Case:
    """Read and validate a case file (serial; see :func:`load_case` for MPI)."""
    path = Path(path)
    if path.is_dir():
        path = path / "case.toml"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CaseError(f"{path}: cannot read case file: {err.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise CaseError(
            f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}); save the case file as UTF-8"
        ) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise CaseError(f"{path}: TOML syntax error: {err}") from None
    return parse_case_tree(raw, path)


def parse_case_tree(raw: dict, path: Path) -> Case:
    """Validate a case already read from TOML; ``path`` names it in errors and anchors a relative mesh path.

    Every check that a run relies on is here (and so in ``isolimb check``): the schema, names, boundary values,
    protocol times, PETSc options and the geometry; nothing is meshed and no collective call is made.
    """
    _check_agent_names(path, raw)
    try:
        case = Case.model_validate(_with_defaults(raw))
    except ValidationError as err:
        raise CaseError(_one_line(path, err, raw)) from None
    if isinstance(case.mesh, FileMesh):
        mesh_path = (path.parent / case.mesh.path).resolve()
        if not mesh_path.is_file():
            raise CaseError(f"{path}: mesh.path = {case.mesh.path!r}: mesh file not found ({mesh_path})")
        case = case.model_copy(update={"mesh": case.mesh.model_copy(update={"path": str(mesh_path)})})
    case = _resolve_inputs(path, case)
    _check_names(path, case, raw)
    _check_values(path, case, raw)
    _check_protocol(path, case, raw)
    _check_petsc(path, case)
    _check_geometry(path, case)
    return case


def _resolve_inputs(path: Path, case: Case) -> Case:
    """Paths of surface files and label images, relative to the case file; each file must exist."""
    m = case.mesh
    if isinstance(m, LabelsMesh):
        image = (path.parent / m.path).resolve()
        if not image.is_file():
            raise CaseError(f"{path}: mesh.path = {m.path!r}: image file not found ({image})")
        return case.model_copy(update={"mesh": m.model_copy(update={"path": str(image)})})
    if isinstance(m, SurfacesMesh):
        found: dict[str, str | list[str]] = {}
        for name, given in m.surfaces.items():
            listed = [given] if isinstance(given, str) else list(given)
            if not listed:
                raise CaseError(f"{path}: mesh.surfaces.{name} = []: expected a surface file name")
            resolved = []
            for item in listed:
                file = (path.parent / item).resolve()
                if not file.is_file():
                    raise CaseError(f"{path}: mesh.surfaces.{name} = {item!r}: surface file not found ({file})")
                resolved.append(str(file))
            found[name] = resolved[0] if isinstance(given, str) else resolved
        cuts = {}
        for name, item in m.cuts.items():
            file = (path.parent / item).resolve()
            if not file.is_file():
                raise CaseError(f"{path}: mesh.cuts.{name} = {item!r}: surface file not found ({file})")
            cuts[name] = str(file)
        return case.model_copy(update={"mesh": m.model_copy(update={"surfaces": found, "cuts": cuts})})
    return case


def region_names(case: Case) -> tuple[str, ...]:
    """Region names the case's mesh will carry."""
    m = case.mesh
    if isinstance(m, LimbMesh):
        names = ["bone", "muscle", "fat", "skin"]
        if m.sarcoma or m.nodules:
            names.append("tumour")
        if m.sarcoma and m.sarcoma.necrotic_fraction > 0:
            names.append("necrosis")
        return tuple(names)
    if isinstance(m, SphereMesh):
        return ("tumour", "muscle") if m.outer_radius else ("tumour",)
    if isinstance(m, (SlabMesh, CylinderMesh)):
        return (m.region,)
    if isinstance(m, SurfacesMesh):
        return tuple(m.surfaces)
    if isinstance(m, LabelsMesh):
        return tuple(m.labels)
    return tuple(m.regions)


def boundary_names(case: Case) -> tuple[str, ...]:
    """Boundary names the case's mesh will carry."""
    m = case.mesh
    if isinstance(m, (LimbMesh, CylinderMesh, SurfacesMesh, LabelsMesh)):
        return BOUNDARIES
    if isinstance(m, SphereMesh):
        return ("outer",)
    if isinstance(m, SlabMesh):
        return ("x0", "x1", "sides")
    return tuple(m.boundaries)


def _check_agent_names(path: Path, raw: dict[str, Any]) -> None:
    """Agent names reach file and array names: a safe pattern only (checked before the schema)."""
    agents = raw.get("agents")
    for name in agents if isinstance(agents, dict) else ():
        if not SAFE_NAME.match(name) or len(name) > MAX_NAME:
            raise CaseError(f"{path}: agents.{name!r}: {_name_rule('an agent name')}")


def _name_rule(what: str) -> str:
    return (
        f"{what} must start with a letter and hold only letters, digits, '_' and '-'"
        f" (at most {MAX_NAME} characters): it becomes part of file names"
    )


def _check_names(path: Path, case: Case, raw: dict[str, Any]) -> None:
    """Regions and boundaries named in the case must exist in its mesh."""
    if isinstance(case.mesh, FileMesh):
        for name in case.mesh.boundaries:
            if not SAFE_NAME.match(name) or len(name) > MAX_NAME:
                raise CaseError(f"{path}: mesh.boundaries.{name!r}: {_name_rule('a boundary name')}")
    present = region_names(case)
    for name in raw.get("tissue", {}):
        if name not in present:
            raise CaseError(f"{path}: tissue.{name}: region {name!r} is not in this mesh; it has {list(present)}")
    known = boundary_names(case)
    if case.protocol and case.protocol.blanket and "skin_surface" not in known:
        raise CaseError(
            f"{path}: protocol.blanket: the warming blanket needs a 'skin_surface'; this mesh has {list(known)}"
        )
    for name, spec in case.boundaries.items():
        if isinstance(spec.drug, FixedValue):
            raise CaseError(
                f"{path}: boundaries.{name}.drug: fixed drug values are not supported by the coupled solver yet;"
                " use no_flux"
            )
    for name in case.boundaries:
        if name not in known:
            raise CaseError(f"{path}: boundaries.{name}: unknown boundary {name!r}; this mesh has {list(known)}")


FIXED_VALUE_DIMENSIONS = {"pressure": U.PRESSURE, "heat": U.TEMPERATURE, "drug": U.CONCENTRATION}
MAX_STEPS = 1_000_000  # time steps of one run: more is a unit slip (dt in ms instead of min)


def _raw(raw: Any, *keys: str | int) -> Any:
    """The value as written in the case file at ``keys`` (None where there is none)."""
    for key in keys:
        try:
            raw = raw[key]
        except (KeyError, IndexError, TypeError):
            return None
    return raw


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:g} min"


def _check_values(path: Path, case: Case, raw: dict[str, Any]) -> None:
    """Fixed boundary values have the dimension of their equation (heat: an absolute temperature)."""
    for name, spec in case.boundaries.items():
        for kind, dim in FIXED_VALUE_DIMENSIONS.items():
            cond = getattr(spec, kind)
            if isinstance(cond, FixedValue):
                try:
                    dim.to_si(cond.value)
                except ValueError as err:
                    raise CaseError(f"{path}: boundaries.{name}.{kind}.value = {_shown(cond.value)}: {err}") from None


def _check_schedule(path: Path, raw: dict[str, Any], key: tuple[str, ...], points: list, end: float, ends: str) -> None:
    """A schedule of {time, value} points is sorted by time and inside the run."""
    name = ".".join(key)
    for i, point in enumerate(points):
        shown = _shown(_raw(raw, *key, i, "time"))
        if i and point.time < points[i - 1].time:
            raise CaseError(
                f"{path}: {name}[{i}].time = {shown}: before the previous point"
                f" ({_minutes(points[i - 1].time)}); expected the schedule sorted by time"
            )
        if point.time > end:
            raise CaseError(f"{path}: {name}[{i}].time = {shown}: after the run ends ({ends})")


def _check_protocol(path: Path, case: Case, raw: dict[str, Any]) -> None:
    """Events inside the run, schedules sorted, a time step that fits the run."""
    p = case.protocol
    end = p.end_time if p else case.numerics.end_time
    dt_raw = _shown(_raw(raw, "numerics", "dt"))
    if p is not None and case.numerics.end_time is not None:
        raise CaseError(
            f"{path}: numerics.end_time = {_shown(_raw(raw, 'numerics', 'end_time'))}: a case with a protocol ends at"
            " protocol.end_time; expected numerics.end_time only without a protocol"
        )
    if p is not None:
        ends = f"protocol.end_time = {_shown(_raw(raw, 'protocol', 'end_time'))}"
        _check_schedule(path, raw, ("protocol", "inflow_temperature"), p.inflow_temperature, p.end_time, ends)
        if p.temperature_control is not None:
            key = ("protocol", "temperature_control", "target")
            _check_schedule(path, raw, key, p.temperature_control.target, p.end_time, ends)
            control = p.temperature_control
            if control.min_inflow > control.max_inflow:
                raise CaseError(
                    f"{path}: protocol.temperature_control.min_inflow ="
                    f" {_shown(_raw(raw, 'protocol', 'temperature_control', 'min_inflow'))}: above max_inflow"
                )
            if case.physics.heat == "off":
                raise CaseError(f"{path}: protocol.temperature_control: needs the heat equation; physics.heat = 'off'")
            if control.probes is None and not isinstance(case.mesh, LimbMesh):
                raise CaseError(
                    f"{path}: protocol.temperature_control.probes: expected probe points (x, y, z with units) for a"
                    f" {case.mesh.generator!r} mesh; only 'limb' meshes have default probes"
                )
        if p.tnf is not None and p.tnf.time >= p.perfusion_duration:
            raise CaseError(
                f"{path}: protocol.tnf.time = {_shown(_raw(raw, 'protocol', 'tnf', 'time'))}: TNF goes into the"
                " perfusate, so it must come before the perfusion ends"
                f" (protocol.perfusion_duration = {_minutes(p.perfusion_duration)})"
            )
        if case.numerics.dt > p.end_time:
            raise CaseError(f"{path}: numerics.dt = {dt_raw}: longer than the run ({ends})")
    if end is not None and end / case.numerics.dt > MAX_STEPS:
        raise CaseError(
            f"{path}: numerics.dt = {dt_raw}: {end / case.numerics.dt:.3g} steps to the end of the run;"
            f" expected at most {MAX_STEPS:,}"
        )


def _check_petsc(path: Path, case: Case) -> None:
    """PETSc option names and values, checked by PETSc on this rank (solver.petsc_options)."""
    if not any(case.numerics.petsc.values()):
        return
    from solver import petsc_options

    defaults = petsc_options.defaults()
    for equation, options in case.numerics.petsc.items():
        problem = petsc_options.check(equation, options, defaults.get(equation))
        if problem:
            raise CaseError(f"{path}: numerics.petsc.{equation}.{problem}")


def _check_geometry(path: Path, case: Case) -> None:
    """The shape the mesh generator will be asked for is possible (solver.meshing.check_geometry)."""
    from solver import meshing

    try:
        meshing.check_geometry(case)
    except meshing.MeshError as err:
        raise CaseError(f"{path}: {err}") from None


def load_case(path: Path, comm: Any) -> Case:
    """Read a case on rank 0 and broadcast it; raise the same :class:`CaseError` on every rank."""
    result: Case | CaseError | None = None
    if comm.rank == 0:
        try:
            result = parse_case(path)
        except CaseError as err:
            result = err
    result = comm.bcast(result, root=0)
    if isinstance(result, CaseError):
        raise result
    assert result is not None
    return result


# ------------------------------------------------------------------------------------------- printing
def resolved(model: BaseModel, prefix: str = "") -> list[str]:
    """Lines ``key = value unit`` of a validated model, SI units named from the schema metadata."""
    lines = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}{name}"
        dims = [m for m in field.metadata if isinstance(m, U.Dimension)]
        dims += [
            m for a in _args(field.annotation) for m in getattr(a, "__metadata__", ()) if isinstance(m, U.Dimension)
        ]
        if isinstance(value, BaseModel):
            lines += resolved(value, key + ".")
        elif isinstance(value, dict) and value and isinstance(next(iter(value.values())), BaseModel):
            for k, v in value.items():
                lines += resolved(v, f"{key}.{k}.")
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            for i, v in enumerate(value):
                lines += resolved(v, f"{key}[{i}].")
        elif dims and value is not None:
            shown = ", ".join(f"{v:.6g}" for v in value) if isinstance(value, tuple) else f"{value:.6g}"
            lines.append(f"{key} = {shown} {dims[0].si_unit}")
        else:
            lines.append(f"{key} = {value!r}")
    return lines


def _args(annotation: Any) -> list[Any]:
    from typing import get_args

    out = []
    stack = [annotation]
    while stack:
        a = stack.pop()
        out.append(a)
        stack.extend(get_args(a))
    return out
