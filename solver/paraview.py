"""``open_in_paraview.py`` for a results folder: the template in ``solver/templates`` with the settings
(regions, tumour centre, field ranges, colour maps) read off the result's ``fields.vtkhdf``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from solver import results
from solver.output import write_atomic
from solver.vtkhdf import VTKHDFSeries

TEMPLATE = Path(__file__).parent / "templates" / results.PARAVIEW_SCRIPT
# ParaView colour presets per quantity (names present in ParaView 5.11 and later)
COLOUR_MAPS = {
    "T": "Inferno (matplotlib)",
    "CEM43": "Inferno (matplotlib)",
    "p": "Viridis (matplotlib)",
    "u": "Cool to Warm",
    "AUC": "Turbo",
    "C": "Plasma (matplotlib)",
    "C_c": "Plasma (matplotlib)",
    "A": "Magma (matplotlib)",
}


def quantity(array: str) -> str:
    """The quantity key of an output array name (``AUC_melphalan_mg_min_per_L`` -> ``AUC``)."""
    return next((k for k in sorted(COLOUR_MAPS, key=len, reverse=True) if array.startswith(k + "_")), array)


def cell_centroids(series: VTKHDFSeries) -> tuple[np.ndarray, np.ndarray]:
    """Centroids and volumes of the cells of a stored mesh."""
    x = series.points()[series.cells()]
    volumes = np.abs(np.einsum("ij,ij->i", x[:, 1] - x[:, 0], np.cross(x[:, 2] - x[:, 0], x[:, 3] - x[:, 0]))) / 6
    return x.mean(axis=1), volumes


def region_centre(series: VTKHDFSeries, region_id: int | None) -> list[float]:
    """Volume centroid of a region (of the whole mesh when ``region_id`` is None)."""
    centres, volumes = cell_centroids(series)
    if region_id is not None:
        keep = series.cell_data("region", 0) == region_id
        centres, volumes = centres[keep], volumes[keep]
    return [float(v) for v in (centres * volumes[:, None]).sum(axis=0) / volumes.sum()]


def field_ranges(series: VTKHDFSeries) -> dict[str, list[float]]:
    """Range of each array over all stored times (vectors: of the magnitude), read one step at a time."""
    out = {}
    steps = range(series.times.size)
    for name in series.point_names:
        out[name] = _range(series.point_data(name, k) for k in steps)
    for name in series.cell_names:
        if name != "region":
            blocks = (series.cell_data(name, k) for k in steps)
            out[name] = _range(np.linalg.norm(v, axis=1) if v.ndim == 2 else v for v in blocks)
    return out


def _range(blocks) -> list[float]:
    lo, hi = np.inf, -np.inf
    for values in blocks:
        lo, hi = min(lo, float(values.min())), max(hi, float(values.max()))
    return [lo, hi]


def write_script(folder: Path) -> Path:
    """Write ``folder/open_in_paraview.py`` (serial; call on one rank)."""
    series = VTKHDFSeries(folder / results.FIELDS_VTKHDF)
    regions = json.loads((folder / results.MESH_META).read_text())["regions"]
    ranges = field_ranges(series)
    auc = [n for n in ranges if n.startswith("AUC_")]
    default = auc[0] if auc else ("T_degC" if "T_degC" in ranges else next(iter(ranges)))
    points = series.points()
    settings = {
        "folder": str(folder.resolve()),
        "regions": regions,
        "tumour_centre": region_centre(series, regions.get("tumour")),
        "size": float(np.ptp(points, axis=0).max()),
        "ranges": ranges,
        "cell_fields": [n for n in series.cell_names if n != "region"],
        "colour_maps": {n: COLOUR_MAPS.get(quantity(n), "Viridis (matplotlib)") for n in ranges},
        "default_field": default,
    }
    text = TEMPLATE.read_text().replace("SETTINGS: dict = {}  # filled in by isolimb", f"SETTINGS: dict = {settings!r}")
    path = folder / results.PARAVIEW_SCRIPT
    write_atomic(path, text)
    return path
