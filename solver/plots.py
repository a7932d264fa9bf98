"""Pictures of a results folder: time-series plots and dose-volume histograms (matplotlib), and slices through
the tumour (pyvista, off-screen). Serial post-processing: read ``timeseries.csv``, ``summary.json`` and
``fields.vtkhdf``; write PNG files into ``<results>/figures``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from solver import results
from solver.output import clinical  # noqa: E402
from solver.paraview import cell_centroids, region_centre  # noqa: E402
from solver.vtkhdf import VTKHDFSeries  # noqa: E402

COVERAGE_LEVELS = (0.9, 0.5)  # AUC_90, AUC_50: the AUC reached by at least 90 % / 50 % of a region's volume


def read_series(folder: Path) -> dict[str, np.ndarray]:
    """``timeseries.csv`` as columns."""
    with open(folder / results.SERIES, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: np.array([float(r[k]) for r in rows]) for k in rows[0]} if rows else {}


def figure(title: str, ylabel: str):
    fig, ax = plt.subplots(figsize=(7.0, 4.0), layout="constrained")
    ax.set_title(title)
    ax.set_xlabel("time (min)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def time_series_plots(folder: Path, out: Path) -> dict[str, Path]:
    """PNG plots of the time series; returns title -> file."""
    s = read_series(folder)
    summary = json.loads((folder / results.SUMMARY).read_text())
    t = s["time_min"]
    made: dict[str, Path] = {}
    for agent in summary.get("agents", {}):
        fig, ax = figure(f"{agent}: perfusate, body and tissue (free drug)", "concentration (mg/L)")
        for key, label in (("perfusate", "perfusate"), ("systemic", "systemic (body)")):
            ax.plot(t, s[f"{agent}_{key}_mg_per_L"], label=label, lw=2 if key == "perfusate" else 1.5)
        for region in ("tumour", "muscle", "skin"):
            key = f"{agent}_C_{region}_mean_mg_per_L"
            if key in s:
                ax.plot(t, s[key], "--", label=f"{region} mean")
        ax.legend()
        made[f"{agent} concentrations"] = save(fig, out / f"concentrations_{agent}.png")
        fig, ax = figure(f"{agent}: systemic leak (net circuit leak + lymph) as % of dose", "leak (% of dose)")
        ax.plot(t, 100 * s[f"{agent}_leak_fraction"], color="C3")
        ax.axhline(10.0, color="k", ls=":", label="10 % threshold (seed 000)")
        ax.legend()
        made[f"{agent} leak"] = save(fig, out / f"leak_{agent}.png")
    fig, ax = figure("Temperatures", "temperature (degC)")
    ax.plot(t, s["inflow_temperature_degC"], "k:", label="inflow")
    if "probe_mean_degC" in s:  # the controller's probes (MODEL.md section 5)
        ax.plot(t, s["probe_mean_degC"], "k-", lw=2, label="probes (mean)")
    for key in s:
        if key.startswith("T_") and key.endswith("_mean_degC"):
            ax.plot(t, s[key], label=key[2:-10] + " mean")
    ax.legend()
    made["temperatures"] = save(fig, out / "temperatures.png")
    if "p_tumour_mean_Pa" in s:
        fig, ax = figure("Tumour interstitial fluid pressure (mean)", "pressure (mmHg)")
        ax.plot(t, clinical("p", s["p_tumour_mean_Pa"]), color="C2")
        tnf = (json.loads((folder / results.CASE_RESOLVED).read_text()).get("protocol") or {}).get("tnf")
        if tnf:
            ax.axvline(tnf["time"] / 60.0, color="k", ls=":", label="TNF dose")
            ax.legend()
        made["tumour pressure"] = save(fig, out / "tumour_pressure.png")
    if "limb_pH" in s:
        fig, ax = figure("Limb acid-base state (ILI)", "pH")
        ax.plot(t, s["limb_pH"], color="C4")
        made["pH"] = save(fig, out / "ph.png")
    return made


@dataclass
class DoseVolume:
    """Cumulative dose-volume histogram of one region: ``fraction[i]`` of the volume has AUC >= ``level[i]``."""

    level: np.ndarray
    fraction: np.ndarray

    def covered(self, fraction: float) -> float:
        """The AUC that at least ``fraction`` of the volume reaches (e.g. 0.9 -> AUC_90)."""
        i = int(np.searchsorted(self.fraction, fraction * (1 - 1e-12)))  # levels descend, fractions ascend
        return float(self.level[min(i, self.level.size - 1)])


def dose_volume(series: VTKHDFSeries, array: str, regions: dict[str, int], step: int = -1) -> dict[str, DoseVolume]:
    """Per region, the volume fraction above each level of a P1 point array, from cell means (exact for P1)."""
    step = step % series.times.size
    centres, volumes = cell_centroids(series)
    values = series.point_data(array, step)[series.cells()].mean(axis=1)
    region_of = series.cell_data("region", 0)
    out = {}
    for name, rid in regions.items():
        keep = region_of == rid
        if not keep.any():
            continue
        order = np.argsort(values[keep])[::-1]
        level = values[keep][order]
        fraction = np.cumsum(volumes[keep][order]) / volumes[keep].sum()
        out[name] = DoseVolume(level, fraction)
    return out


def dose_volume_of(folder: Path) -> dict[str, DoseVolume]:
    """Per-region histograms of the primary agent's free-drug AUC at the end of a results folder's run
    (empty without a drug, without ``fields.vtkhdf`` or without the AUC array)."""
    agent = json.loads((folder / results.SUMMARY).read_text()).get("primary_agent")
    name = f"AUC_{agent}_mg_min_per_L"
    if not agent or not (folder / results.FIELDS_VTKHDF).exists():
        return {}
    series = VTKHDFSeries(folder / results.FIELDS_VTKHDF)
    if name not in series.point_names:
        return {}
    return dose_volume(series, name, json.loads((folder / results.MESH_META).read_text())["regions"])


def kill_volume_of(summary: dict) -> dict[str, DoseVolume]:
    """Per-region survival-volume histograms of the primary agent from a summary (computed in the run, reduced
    over ranks): the volume fraction with at least each log10 kill, as :class:`DoseVolume` (levels descending)."""
    out = {}
    for region, entry in summary.get("regions", {}).items():
        h = entry.get("kill_volume_histogram")
        if h and h["log10_kill"]:
            out[region] = DoseVolume(np.array(h["log10_kill"])[::-1], np.array(h["volume_fraction"])[::-1])
    return out


def dvh_plot(
    histograms: dict[str, DoseVolume],
    xlabel: str,
    path: Path,
    title: str = "Cumulative drug-volume histogram (end of run)",
    ylabel: str = "volume with at least this AUC (%)",
    emphasis: str | None = "tumour",
) -> Path:
    """Cumulative drug-volume histograms, one curve per label (the ``emphasis`` curve drawn thicker)."""
    fig, ax = plt.subplots(figsize=(7.0, 4.0), layout="constrained")
    for name, h in histograms.items():
        ax.step(h.level, 100 * h.fraction, where="post", label=name, lw=2 if name == emphasis else 1.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_ylim(0, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    return save(fig, path)


def _around(centre, half: float) -> list[float]:
    """Bounds (lo, hi per axis) of a box of half-width ``half`` around ``centre``."""
    return [v for c in centre for v in (c - half, c + half)]


RENDERED = {"AUC": "turbo", "T": "inferno", "p": "viridis", "A": "magma", "kill": "plasma"}  # quantity -> colour map


def slice_renders(folder: Path, out: Path) -> dict[str, Path]:
    """Off-screen pyvista pictures of the slice x = x_tumour (limb axis vertical) at the last output time."""
    import pyvista as pv
    from vtkmodules.vtkCommonCore import vtkLogger

    vtkLogger.SetStderrVerbosity(vtkLogger.VERBOSITY_OFF)  # no warning when falling back from X to EGL/OSMesa
    path = folder / results.FIELDS_VTKHDF
    series = VTKHDFSeries(path)
    regions = json.loads((folder / results.MESH_META).read_text())["regions"]
    centre = region_centre(series, regions.get("tumour"))
    reader = pv.get_reader(str(path))
    reader.reader.UpdateInformation()
    reader.reader.SetStep(series.times.size - 1)
    grid = reader.read()
    cut = grid.slice(normal="x", origin=centre)
    window = None
    if "tumour" in regions:
        ids = [regions[r] for r in ("tumour", "necrosis") if r in regions]
        tumour_cells = grid.extract_cells(np.isin(grid.cell_data["region"], ids))
        lo, hi = np.array(tumour_cells.bounds).reshape(3, 2).T
        window = 1.5 * float((hi - lo).max())
        mesh_size = float(np.ptp(np.array(grid.bounds).reshape(3, 2), axis=1).max())
        window = min(window, mesh_size / 2)
        cut = cut.clip_box([centre[0] - 1, centre[0] + 1, *_around(centre[1:], 2 * window)], invert=False)
    made: dict[str, Path] = {}
    for name in grid.point_data:
        key = name.split("_")[0]
        if key not in RENDERED:
            continue
        plotter = pv.Plotter(off_screen=True, window_size=(900, 700))
        plotter.add_mesh(grid.outline(), color="grey")
        plotter.add_mesh(cut, scalars=name, cmap=RENDERED[key], scalar_bar_args={"title": name.replace("_", " ")})
        if "tumour" in regions:  # the tumour's outline on the slice
            tumour = grid.threshold([regions["tumour"] - 0.5, regions["tumour"] + 0.5], scalars="region")
            rim = tumour.slice(normal="x", origin=centre).extract_feature_edges(
                boundary_edges=True, feature_edges=False, manifold_edges=False, non_manifold_edges=False
            )
            plotter.add_mesh(rim, color="white", line_width=2)
        plotter.view_yz()
        if window is not None:  # frame the tumour with a margin of about its own size each side
            plotter.enable_parallel_projection()
            plotter.camera.focal_point = centre
            plotter.camera.position = (centre[0] + 10 * window, centre[1], centre[2])
            plotter.camera.up = (0.0, 0.0, 1.0)
            plotter.camera.parallel_scale = window
        file = out / f"slice_{name}.png"
        plotter.screenshot(str(file))
        plotter.close()
        made[f"{name} on the slice through the tumour centre at {series.times[-1] / 60:.0f} min"] = file
    return made
