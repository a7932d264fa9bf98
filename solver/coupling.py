"""The coupled model: builds every equation of a case on one mesh, wires them together, and advances them.

Fields shared between equations are dolfinx Functions owned by one equation and read by the others:
pressure gives the Darcy flux u and filtration Jv to transport; heat gives T to the rate constants;
the TNF switch and the protocol (solver.protocol.Schedule) update DG0 parameter fields in place.

One step is :meth:`CoupledModel.advance` (every equation from t to t + dt, in the order of MODEL.md) and
:meth:`CoupledModel.accept`; everything a step changes is :meth:`CoupledModel.state`, put back by
:meth:`CoupledModel.restore` (rollback of a failed step, checkpoint and restart use this one route).
The time loop (solver.simulation) keeps only time: milestones, dt, cut-back, stop and checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import ufl
from dolfinx import fem
from mpi4py import MPI

from solver.case import AgentParams, Case, FixedValue, Robin
from solver.meshing import MeshError, TaggedMesh, region_volumes
from solver.parameters import BLOOD
from solver.physics import tnf as tnf_switch
from solver.physics.circuit import Circuit
from solver.physics.control import InflowController, controller, probe_points
from solver.physics.effects import T_40, log10_kill, thermal_enhancement
from solver.physics.heat import Heat, RobinBoundary, cem43_increment, lang_blood_perfusion
from solver.physics.linear import LinearSystem, NodalWeights, SolveError
from solver.physics.materials import RegionFields
from solver.physics.metabolism import MetabolicState
from solver.physics.pressure import Pressure
from solver.physics.transport import FIELDS, Exchange, ThermalRates, Transport, TransportProblem
from solver.probe import PointValues
from solver.protocol import Schedule
from solver.units import DENSITY, HEAT_CAPACITY, PRESSURE, TEMPERATURE


@dataclass
class Agent:
    """One drug: its tissue problem, its temperature-dependent rates and its circuit."""

    name: str
    params: AgentParams
    transport: TransportProblem
    rates: ThermalRates
    circuit: Circuit
    f_u: fem.Constant  # unbound fraction of the plasma the capillaries carry (perfusate, then body's)
    f_u_perfusate: float  # the perfusate's, from its albumin (MODEL.md section 3)
    binding: fem.Function  # B = r (1 - f_u)/f_u per region (DG0): interstitial albumin-bound / free
    hydrolysed_tissue: float = 0.0
    boundary_out: float = 0.0
    auc_free: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # integral of C dt (kg s/m^3)
    auc_cell: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # time integral of C_c (kg s/m^3)
    peak_free: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # running maximum of C (kg/m^3)
    auc_effective: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))  # INT TER(T) C dt (kg s/m^3)
    auc_systemic: float = 0.0  # time integral of the systemic concentration (kg s/m^3)
    auc_perfusate: float = 0.0  # time integral of the perfusate concentration while isolated (kg s/m^3)

    @property
    def space(self) -> fem.FunctionSpace:
        """The scalar space of each of C, C_c and A."""
        return self.transport.V

    def field(self, i: int) -> np.ndarray:
        """C, C_c or A (``i`` = 0, 1, 2) as nodal values (kg/m^3)."""
        return self.transport.fields()[i]


ACCUMULATORS = ("auc_free", "auc_cell", "peak_free", "auc_effective")  # nodal running outcomes of an agent
TOTALS = ("hydrolysed_tissue", "boundary_out", "auc_systemic", "auc_perfusate")  # scalar ones


@dataclass
class ModelState:
    """Everything a step changes: ``scalars`` (JSON-able: dt, protocol memory, metabolism, circuits and
    totals per agent) and ``nodal`` arrays by name ("T", "cem43", "<agent>.C", "<agent>.auc_free", ...) on the
    scalar space (owned and ghost values)."""

    scalars: dict
    nodal: dict[str, np.ndarray]


class RegionIntegrals:
    """Integrals of nodal fields over regions as dot products: INT_R w f dx = sum_i f_i INT_R w v_i dx, exact
    for every f in V and piecewise-constant weights w ("one", "phi", "phi_c"), assembled once."""

    def __init__(self, V: fem.FunctionSpace, dx: ufl.Measure, regions: dict[str, int], weights: dict) -> None:
        v = ufl.TestFunction(V)
        degree = V.ufl_element().embedded_superdegree  # v times a DG0 weight: exact at this degree
        self.comm, self.n_owned = V.mesh.comm, V.dofmap.index_map.size_local
        self.nodal = NodalWeights(
            {
                f"{region}.{name}": w * v * dx(tag, metadata={"quadrature_degree": degree})
                for region, tag in regions.items()
                for name, w in weights.items()
            }
        )

    def __call__(self, *terms: tuple[str, str, np.ndarray]) -> list[float]:
        """INT_region weight * values dx for each (region, weight, values), in one reduction over ranks."""
        n = self.n_owned
        local = np.array([float(np.dot(self.nodal[f"{r}.{w}"][:n], f[:n])) for r, w, f in terms])
        return [float(x) for x in self.comm.allreduce(local, op=MPI.SUM)]


class RegionFractions:
    """Volume fractions of regions where a nodal field reaches given levels, judged on cell means of its nodal
    values (the exact cell mean for P1, as the drug-volume histograms of solver.plots), summed over each rank's
    owned cells and reduced over ranks: fractions lie in [0, 1] at any degree and any number of ranks."""

    def __init__(self, V: fem.FunctionSpace, cells: dict[str, np.ndarray]) -> None:
        msh = V.mesh
        self.comm = msh.comm
        V0 = fem.functionspace(msh, ("DG", 0))
        volume = fem.assemble_vector(fem.form(ufl.TestFunction(V0) * ufl.dx)).array  # per owned cell
        n_owned = msh.topology.index_map(3).size_local
        self.cells: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # region -> (cell volumes, cell dofs in V)
        for region, c in cells.items():
            owned = c[c < n_owned]
            self.cells[region] = (volume[V0.dofmap.list[owned, 0]], V.dofmap.list[owned])

    def __call__(self, region: str, values: np.ndarray, levels: np.ndarray) -> np.ndarray:
        """The fraction of the region's volume whose cell mean of ``values`` is at least each of ``levels``."""
        volume, dofs = self.cells[region]
        means = values[dofs].mean(axis=1) if dofs.size else np.zeros(0)
        local = np.array([volume.sum(), *(volume[means >= level].sum() for level in levels)])
        total, *reached = self.comm.allreduce(local, op=MPI.SUM)
        return np.array(reached) / total if total > 0 else np.zeros(len(levels))


class CoupledModel:
    """Every equation of ``case`` on ``tm``, with the parameter fields they share."""

    def __init__(self, case: Case, tm: TaggedMesh) -> None:
        self.case, self.tm, self.comm = case, tm, tm.comm
        msh = tm.mesh
        self.degree = case.numerics.degree
        self.V = fem.functionspace(msh, ("Lagrange", self.degree))
        self.dt = fem.Constant(msh, case.numerics.dt)
        self.ds = ufl.Measure("ds", domain=msh, subdomain_data=tm.facet_tags)
        self.dx = ufl.Measure("dx", domain=msh, subdomain_data=tm.cell_tags)
        self.volumes = region_volumes(tm)
        self.limb_volume = sum(self.volumes.values())
        protocol = case.protocol
        self.schedule = Schedule.of(case)
        self.seconds = {"pressure": 0.0, "heat": 0.0, "transport": 0.0}  # wall time per equation
        tissue = dict(case.tissue)
        self.tissue_at_rest = dict(tissue)  # after release
        self.capillary_regions: list[str] = []
        if protocol and protocol.capillary_pressure is not None:  # the pump raises capillary pressure
            self.capillary_regions = [r for r in protocol.capillary_pressure_regions if r in tissue]
            for r in self.capillary_regions:
                tissue[r] = tissue[r].model_copy(update={"p_v": protocol.capillary_pressure})
        self.tissue = tissue  # while isolated
        self.isolated = True
        self.mat = RegionFields(tm, tissue)
        m = self.mat
        m.fields["P_factor"] = m.make(dict.fromkeys(tm.regions, 1.0), "P_factor")  # TNF on P (tumour)
        m.fields["tnf_leak"] = m.make(dict.fromkeys(tm.regions, 0.0), "tnf_leak")  # TNF perfusate leak (1/s)
        # baseline volumetric perfusion (1/s) = perfusion per mass * density
        self.omega_base = {r: tissue[r].perfusion * tissue[r].density for r in tm.regions}
        m.fields["omega"] = m.make(self.omega_base, "omega")
        self._omega = dict(self.omega_base)  # region -> omega now in the "omega" field (1/s)
        self.blood_density = DENSITY.to_si(BLOOD["density"])
        self.tnf_state = 0.0  # the TNF effect E = s(t) e(dose) now in the tumour's fields
        self.tissue_mass = sum(tissue[r].density * self.volumes[r] for r in tm.regions)
        # circulating volume: circuit prime plus the limb's own blood (the perfusate compartment)
        self.circulating_volume = (
            protocol.prime_volume + protocol.limb_blood_fraction * self.limb_volume if protocol else 0.0
        )
        # the TNF dose response on its perfusate concentration (MODEL.md section 6)
        self.tnf_dose_effect = (
            tnf_switch.dose_response(protocol.tnf, self.circulating_volume) if protocol and protocol.tnf else 0.0
        )
        self.metabolism = (
            MetabolicState(
                protocol.metabolism,
                self.tissue_mass,
                blood_volume=self.circulating_volume,
                ecw_volume=protocol.metabolism.ecw_fraction * self.limb_volume,
            )
            if protocol and protocol.metabolism
            else None
        )
        self.uptake_factor = 1.0  # acidosis potentiation of uptake (metabolism), else 1
        self.exchange_stale = True  # pressure solved since the transport exchange terms were last assembled
        self._pressure_for: tuple | None = None  # (TNF state, isolated) the pressure was last solved for
        self.controller: InflowController | None = None  # probe-controlled inflow temperature, if any
        self.probes: PointValues | None = None
        self._build_pressure()
        self._build_heat()
        self._build_control()
        self.cem43 = np.zeros_like(self.T.x.array)  # thermal dose, equivalent minutes at 43 C
        self.time_above_40C = np.zeros_like(self.T.x.array)  # seconds spent above 40 C
        self.T_peak = self.T.x.array.copy()  # the highest temperature each node has had (K)
        self.agents = (
            [self._build_agent(name, params) for name, params in case.agents.items()]
            if (case.physics.drug and protocol is not None)
            else []
        )
        weights = {"one": fem.Constant(msh, 1.0), "phi": m["phi"], "phi_c": m["phi_c"]}
        weights.update({f"storage_{a.name}": m["phi"] * (1.0 + a.binding) for a in self.agents})  # free + bound
        self.integrals = RegionIntegrals(self.V, self.dx, tm.regions, weights)
        self.fractions = RegionFractions(self.V, m.cells)

    # ------------------------------------------------------------------------------------ equations
    def _dirichlet(self, kind: str, dim) -> list[fem.DirichletBC]:
        bcs = []
        for name, spec in self.case.boundaries.items():
            cond = getattr(spec, kind)
            if isinstance(cond, FixedValue):
                value = dim.to_si(cond.value)
                facets = self.tm.facet_tags.find(self.tm.boundaries[name])
                dofs = fem.locate_dofs_topological(self.V, 2, facets)
                bcs.append(fem.dirichletbc(value, dofs, self.V))
        return bcs

    @property
    def filtration(self) -> ufl.core.expr.Expr:
        """Jv/V (1/s): the Starling filtration, or zero without the pressure equation (diffusion-only exchange)."""
        return self.pressure.filtration() if self.case.physics.pressure else fem.Constant(self.tm.mesh, 0.0)

    @property
    def lymph(self) -> ufl.core.expr.Expr:
        """JL/V (1/s): lymph drainage, or zero without the pressure equation."""
        return self.pressure.lymph() if self.case.physics.pressure else fem.Constant(self.tm.mesh, 0.0)

    def _build_pressure(self) -> None:
        m = self.mat
        pe = m["p_v"] - m["sigma_p"] * (m["pi_v"] - m["pi_i"])
        petsc = self.case.numerics.petsc.get("pressure")
        self.pressure = Pressure(
            self.V, m["K"], m["Lp"] * m["S_V"], pe, m["LL"], m["p_L"], self._dirichlet("pressure", PRESSURE), petsc
        )

    def _build_heat(self) -> None:
        case, m = self.case, self.mat
        T0 = case.protocol.initial_temperature if case.protocol else 310.15
        self.T_a = fem.Constant(self.tm.mesh, self.inflow_temperature(0.0))
        if case.physics.heat == "off":
            self.heat = None
            self.T = fem.Function(self.V, name="T")
            self.T.x.array[:] = T0
            return
        robin = []
        for name, spec in case.boundaries.items():
            if isinstance(spec.heat, Robin):
                robin.append(RobinBoundary(self.tm.mesh, self.tm.boundaries[name], spec.heat.h, spec.heat.ambient))
        blanket = case.protocol.blanket if case.protocol else None
        if blanket is not None:  # ILI warming blanket replaces any skin condition
            robin = [r for r in robin if r.tag != self.tm.boundaries["skin_surface"]]
            robin.append(
                RobinBoundary(self.tm.mesh, self.tm.boundaries["skin_surface"], blanket.h, blanket.temperature)
            )
        rho_b_c_b = DENSITY.to_si(BLOOD["density"]) * HEAT_CAPACITY.to_si(BLOOD["heat_capacity"])
        self.heat = Heat(
            self.V,
            rho_c=m["density"] * m["heat_capacity"],
            k=m["conductivity"],
            perfusion_coeff=rho_b_c_b * m["omega"],
            T_a=self.T_a,
            Q_m=m["metabolic_heat"] * m["density"],
            dt=self.dt,
            T_initial=T0,
            robin=robin,
            ds=self.ds,
            bcs=self._dirichlet("heat", TEMPERATURE),
            steady=case.physics.heat == "steady",
            petsc=case.numerics.petsc.get("heat"),
        )
        self.T = self.heat.T

    def _build_control(self) -> None:
        """The probe-controlled inflow temperature (MODEL.md section 5), when the case asks for it."""
        p = self.case.protocol
        if p is None or p.temperature_control is None or self.heat is None:
            return
        points = probe_points(self.case)
        self.probes = PointValues(self.tm.mesh, points)
        if not self.probes.found.all():
            i = int(np.flatnonzero(~self.probes.found)[0])
            where = ", ".join(f"{1e3 * x:.4g} mm" for x in points[i])
            raise MeshError(f"protocol.temperature_control.probes[{i}] = ({where}): outside the mesh")
        self.controller = controller(self.case, initial_output=self.schedule.inflow_temperature(0.0))

    def controlled(self, t: float) -> bool:
        """Whether the controller sets the inflow temperature of the step ending at t (during perfusion)."""
        p = self.case.protocol
        return self.controller is not None and p is not None and t <= p.perfusion_duration * (1 + 1e-12) + 1e-9

    def probe_temperature(self) -> float:
        """Mean temperature (K) of the controller's probe points now."""
        assert self.probes is not None
        return float(np.mean(self.probes(self.T)))

    def _build_agent(self, name: str, params: AgentParams) -> Agent:
        m, case = self.mat, self.case
        protocol = case.protocol
        assert protocol is not None
        lumped = case.numerics.mass_lumping and self.degree == 1
        # linear binding to albumin: bound/free = K_a [albumin]; in plasma (1 - f_u)/f_u
        affinity = (1.0 - params.f_u) / params.f_u
        f_u_perfusate = 1.0 / (1.0 + protocol.perfusate_albumin_ratio * affinity)
        f_u = fem.Constant(self.tm.mesh, f_u_perfusate)
        binding = m.make({r: self.tissue[r].albumin_ratio * affinity for r in self.tm.regions}, f"B_{name}")
        exchange = Exchange(
            Jv=self.filtration,
            PS=params.P * m["P_factor"] * m["S_V"],
            omega=m["omega"],
            sigma_d=params.sigma_d,
            f_u=f_u,
            leak=m["tnf_leak"],
        )
        rates = ThermalRates(
            self.V,
            params.half_life,
            params.alkylation_half_life,
            params.D,
            params.k_up,
            Ea=(params.Ea, params.Ea_alkylation, params.Ea_uptake),
        )
        rates.update(self.T.x.array, self.uptake_factor)
        kinetics = rates.kinetics(params.kappa)
        transport = Transport(
            self.tm.mesh,
            self.degree,
            m["phi"],
            m["phi_c"],
            self.pressure.u,
            self.lymph,
            exchange,
            kinetics,
            self.dt,
            stabilisation=case.numerics.stabilisation,
            lumped=lumped,
            petsc=case.numerics.petsc.get("transport"),
            prefix=f"transport_{name}_",
            ds=self.ds,
            space=self.V if lumped else None,
            binding=binding,
        )
        circuit = Circuit(
            V_p=self.circulating_volume, V_s=protocol.systemic_volume, clearance=protocol.systemic_clearance
        )
        agent = Agent(name, params, transport, rates, circuit, f_u, f_u_perfusate, binding)
        n = len(transport.fields()[0])
        for key in ACCUMULATORS:
            setattr(agent, key, np.zeros(n))
        return agent

    # -------------------------------------------------------------------------------------- protocol
    def inflow_temperature(self, t: float) -> float:
        """Heat-exchanger outlet temperature (K) at time t: the controller's during perfusion when the case has
        one, else the schedule's."""
        if self.controller is not None and self.controlled(t):
            return self.controller.output
        return self.schedule.inflow_temperature(t)

    def set_time(self, t: float) -> set[str]:
        """Set every time-dependent input to its value at t. Returns what changed: "vascular" (vessel
        properties: pressure must be re-solved), "exchange" (drug exchange only: TNF on P and its perfusate leak),
        "perfusion" (omega: heat and transport operators change) and/or "release" (the tourniquet: capillary
        pressure back to rest, plasma binding the body's)."""
        changed: set[str] = set()
        self.T_a.value = self.inflow_temperature(t)
        if self.schedule.isolated(t) != self.isolated:
            self._set_isolated(self.schedule.isolated(t))
            changed |= {"vascular", "release"}
        p = self.case.protocol
        flow_factor = 1.0
        if p is not None and p.tnf is not None and "tumour" in self.tm.regions:
            effect = tnf_switch.progress(p.tnf, t) * self.tnf_dose_effect
            values = tnf_switch.tumour_values(p.tnf, self.tissue["tumour"], effect)
            flow_factor = values["flow_factor"]
            if abs(effect - self.tnf_state) > 1e-6:
                self._set_tnf(values)
                self.tnf_state = effect
                changed.add("vascular" if tnf_switch.moves_pressure(p.tnf) else "exchange")
        # Decide from the per-region values, identical on every rank: the local DG0 array of a rank without
        # tumour cells would not see a tumour change, and ranks would disagree about a collective reassembly.
        omega = self.perfusion(t, flow_factor)
        if omega != self._omega:
            for region, value in omega.items():
                self.mat.set("omega", region, value)
            self._omega = omega
            changed.add("perfusion")
        return changed

    def _set_isolated(self, isolated: bool) -> None:
        """Tourniquet on (isolated) or released: capillary pressure and the plasma's unbound fraction."""
        source = self.tissue if isolated else self.tissue_at_rest
        for region in self.capillary_regions:
            self.mat.set("p_v", region, source[region].p_v)
        for a in self.agents:
            a.f_u.value = a.f_u_perfusate if isolated else a.params.f_u
        if not isolated:  # reperfused: the limb's blood rejoins the body, no more trapped-blood acidosis
            self.uptake_factor = 1.0
        self.isolated = isolated

    def _set_tnf(self, values: dict[str, float]) -> None:
        """The tumour's parameter fields at a TNF effect (solver.physics.tnf.tumour_values)."""
        for key in (*tnf_switch.PRESSURE_KEYS, *tnf_switch.EXCHANGE_KEYS):
            self.mat.set(key, "tumour", values[key])

    def _pressure_key(self) -> tuple:
        """What the pressure solution depends on that changes in time: the TNF effect (when TNF moves the
        pressure equation) and whether the limb is isolated."""
        tnf = self.case.protocol.tnf if self.case.protocol else None
        moves = tnf is not None and tnf_switch.moves_pressure(tnf)
        return (self.tnf_state if moves else 0.0, self.isolated)

    def protocol_state(self) -> dict:
        """What :meth:`set_time` remembers between calls: the TNF progress, the perfusion per region (1/s) and
        whether the limb is isolated."""
        return {"tnf_state": self.tnf_state, "omega": dict(self._omega), "isolated": self.isolated}

    def set_protocol_state(self, state: dict) -> None:
        """Restore :meth:`protocol_state` (restart from a checkpoint) and the parameter fields that follow it."""
        p = self.case.protocol
        self.tnf_state = float(state["tnf_state"])
        if p is not None and p.tnf is not None and "tumour" in self.tm.regions:
            self._set_tnf(tnf_switch.tumour_values(p.tnf, self.tissue["tumour"], self.tnf_state))
        self._omega = {r: float(v) for r, v in state["omega"].items()}
        for region, value in self._omega.items():
            self.mat.set("omega", region, value)
        self._set_isolated(bool(state["isolated"]))

    def perfusion(self, t: float, tumour_flow_factor: float = 1.0) -> dict[str, float]:
        """Volumetric plasma flow per region (1/s).

        Weights are the baseline perfusion, or with ``temperature_dependent_perfusion`` the Lang et al.
        correlation at each region's mean temperature (muscle, fat, tumour); TNF scales the tumour weight.
        While the circuit runs its flow Q is shared in proportion to weight x volume, so that
        sum(omega V) = Q; without circuit flow the weights are the perfusion itself.
        """
        weights = dict(self.omega_base)
        if self.case.physics.temperature_dependent_perfusion:
            for region, T in self.region_temperatures().items():
                w_b = lang_blood_perfusion(region, T)
                if w_b is not None:
                    weights[region] = w_b / self.blood_density
        if "tumour" in weights:
            weights["tumour"] *= tumour_flow_factor
        Q = self.schedule.flow(t)
        if Q <= 0.0:
            return weights
        total = sum(weights[r] * self.volumes[r] for r in weights)
        return {r: w * Q / total for r, w in weights.items()}

    def solve_pressure(self) -> None:
        """Solve the (steady) pressure and Darcy flux; drug exchange and lymph follow at the next step. With
        ``physics.pressure = false`` nothing is solved: p and u stay zero, and so do filtration and lymph."""
        if self.case.physics.pressure:
            self.pressure.solve()
        self.exchange_stale = True
        self._pressure_for = self._pressure_key()

    def linear_systems(self) -> dict[str, LinearSystem]:
        """Every linear system of the model by equation name (pressure, heat, transport_<agent>)."""
        systems = {"pressure": self.pressure.system}
        if self.heat is not None:
            systems["heat"] = self.heat.system
        for a in self.agents:
            systems[f"transport_{a.name}"] = a.transport.system
        return systems

    def region_temperatures(self) -> dict[str, float]:
        """Volume-mean temperature (K) of each region, the same on every rank."""
        regions = list(self.tm.regions)
        totals = self.integrals(*((r, "one", self.T.x.array) for r in regions))
        return {r: total / self.volumes[r] for r, total in zip(regions, totals, strict=True)}

    def limb_mean_temperature(self) -> float:
        """Volume-mean tissue temperature (K) over the whole limb."""
        means = self.region_temperatures()  # one reduction over ranks for every region
        return sum(means[r] * self.volumes[r] for r in self.tm.regions) / self.limb_volume

    def log10_kill(self, a: Agent) -> np.ndarray:
        """Nodal log10 kill of tumour cells by agent ``a`` so far: -log10 exp(-k AUC_eff) (MODEL.md section 8)."""
        return log10_kill(a.auc_effective, a.params.kill_constant)

    def dose_amount(self, per_limb_volume: float | None, amount: float | None) -> float:
        """A dose in kg: absolute, or per unit limb volume (seed 003 doses per litre of limb)."""
        return amount if amount is not None else float(per_limb_volume) * self.limb_volume  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------- step
    @contextmanager
    def timer(self, equation: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[equation] += time.perf_counter() - start

    def start(self) -> None:
        """The inputs at t = 0 and the initial pressure, for a run from the beginning."""
        self.set_time(0.0)
        self.solve_pressure()

    def events(self, t: float, done: set[int]) -> None:
        """What happens at t, before the step from t: boluses due into their agents' perfusate (their indices
        join ``done``), and at the end of washout the tourniquet release (blood and lymph-pool drug to the body)."""
        for i, d in self.schedule.doses_due(t, done) if self.agents else []:  # no agents when drug is off
            agent = next(a for a in self.agents if a.name == d.agent)
            agent.circuit.dose(self.dose_amount(d.per_limb_volume, d.amount))
            done.add(i)
        for a in self.agents:
            if not a.circuit.released and not self.schedule.isolated(t + 1e-6):
                a.circuit.release()

    def advance(self, t: float, dt: float) -> None:
        """Advance every equation from t to t + dt in the order of MODEL.md (raises SolveError)."""
        t1, dt_changed = t + dt, dt != self.dt.value
        self.dt.value = dt
        if self.controller is not None and self.controlled(t1):  # the probes at t set the inflow of this step
            self.controller.update(t, dt, self.probe_temperature())
        with self.timer("pressure"):
            changed = self.set_time(t1)  # protocol inputs at t + dt: inflow T, TNF, perfusion
            if "vascular" in changed:
                self.solve_pressure()  # steady IFP and Darcy flux (section 2)
        with self.timer("heat"):
            if self.heat is not None:  # Pennes (section 5); a steady problem is re-solved too
                if "perfusion" in changed or dt_changed:
                    self.heat.operator_changed()
                self.heat.step()
            if self.metabolism is not None and self.isolated:  # trapped-blood acid-base of ILI (section 7)
                self.metabolism.step(dt, self.limb_mean_temperature())
                self.uptake_factor = self.metabolism.uptake_factor
        with self.timer("transport"):
            exchange_changed = self.exchange_stale or bool(changed)
            for a in self.agents:  # tissue drug, implicit with its circuit (sections 3 and 4)
                a.rates.update(self.T.x.array, self.uptake_factor)
                a.transport.prepare(exchange_changed)
                a.transport.solve_split()
                vascular, lymph = a.transport.rates()
                # perfusate hydrolysis acts on the free drug only (albumin protects the bound)
                k_h = a.f_u_perfusate * self.schedule.perfusate_hydrolysis(a.params.half_life, a.params.Ea, t1)
                Q_leak, Q_wash = self.schedule.leak_flow(a.circuit.V_p, t1), self.schedule.washout_flow(t1)
                plasma, C_s = a.circuit.solve(dt, k_h, Q_leak, Q_wash, vascular, lymph)
                if not (math.isfinite(plasma) and math.isfinite(C_s)):
                    raise SolveError(f"circuit of {a.name}: non-finite concentration")
                a.transport.combine(plasma)
                lymph_rate = a.transport.amount("lymph_out")
                a.circuit.accept(plasma, C_s, dt, k_h, Q_leak, Q_wash, lymph_rate)
                a.hydrolysed_tissue += dt * a.transport.amount("hydrolysis")
                a.boundary_out += dt * a.transport.amount("boundary_out")
            self.exchange_stale = False

    def accept(self, dt: float) -> None:
        """Take the step just advanced: new states become old; AUCs, peaks, CEM43 and time above 40 C advance
        over dt (right end point, backward Euler as the equations)."""
        T = self.T.x.array
        for a in self.agents:
            a.transport.advance()
            C, C_c, _ = a.transport.fields()
            a.auc_free += dt * C
            a.auc_cell += dt * C_c
            np.maximum(a.peak_free, C, out=a.peak_free)
            a.auc_effective += dt * thermal_enhancement(T, a.params.ter_beta) * C  # heat-enhanced, for the kill
            a.auc_systemic += dt * a.circuit.C_s  # backward Euler, as the circuit
            a.auc_perfusate += dt * a.circuit.C_p
        self.cem43 += cem43_increment(T, dt)
        self.time_above_40C += dt * (T > T_40)
        np.maximum(self.T_peak, T, out=self.T_peak)

    # ------------------------------------------------------------------------------------------ state
    def state(self) -> ModelState:
        """Everything a step changes, as copies (see :class:`ModelState`)."""
        mb = self.metabolism
        scalars: dict = {
            "dt": float(self.dt.value),
            "protocol": self.protocol_state(),
            "metabolism": mb.state() if mb else None,
            "controller": self.controller.state() if self.controller else None,
            "agents": {
                a.name: {"circuit": a.circuit.state(), **{key: getattr(a, key) for key in TOTALS}} for a in self.agents
            },
        }
        nodal = {
            "T": self.T.x.array.copy(),
            "T_peak": self.T_peak.copy(),
            "cem43": self.cem43.copy(),
            "time_above_40C": self.time_above_40C.copy(),
        }
        for a in self.agents:
            nodal.update({f"{a.name}.{key}": v.copy() for key, v in zip(FIELDS, a.transport.fields(), strict=True)})
            nodal.update({f"{a.name}.{key}": getattr(a, key).copy() for key in ACCUMULATORS})
        return ModelState(scalars, nodal)

    def restore(self, state: ModelState) -> None:
        """Put the model back into ``state``: rollback of a failed step, restart from a checkpoint. The
        pressure (no time derivative) is re-solved when the restored TNF state is not the one it was solved for."""
        s, x = state.scalars, state.nodal
        self.dt.value = s["dt"]
        self.T.x.array[:] = x["T"]
        if self.heat is not None:
            self.heat.T_old.x.array[:] = x["T"]
        self.cem43[:] = x["cem43"]
        self.time_above_40C[:] = x["time_above_40C"]
        self.T_peak[:] = x.get("T_peak", x["T"])  # checkpoints written before the peak was kept: from now on
        if self.metabolism is not None:
            mb = self.metabolism
            mb.restore(s["metabolism"])
            self.uptake_factor = mb.uptake_factor
        if self.controller is not None:
            self.controller.restore(s["controller"])
        for a in self.agents:
            saved = s["agents"][a.name]
            a.circuit.restore(saved["circuit"])
            for key in TOTALS:
                setattr(a, key, saved[key])
            a.transport.set_fields([x[f"{a.name}.{key}"] for key in FIELDS])
            a.transport.C_p.value = a.circuit.plasma
            for key in ACCUMULATORS:
                getattr(a, key)[:] = x[f"{a.name}.{key}"]
        self.set_protocol_state(s["protocol"])
        if self._pressure_for != self._pressure_key():
            self.solve_pressure()

    def destroy(self) -> None:
        """Free every PETSc solver and matrix of the model."""
        for system in self.linear_systems().values():
            system.destroy()


__all__ = ["Agent", "CoupledModel", "ModelState"]
