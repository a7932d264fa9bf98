"""A synthetic but anatomically shaped labelled image of a lower leg (calf) segment, as a segmentation in 3D Slicer
or ITK-SNAP would save it: a NIfTI volume of integer labels with its voxel spacing and orientation in the header.

    python meshes/synthetic_leg.py                       # writes meshes/synthetic-leg.nii.gz (2 mm voxels)
    python meshes/synthetic_leg.py -o leg.nii.gz --voxel 2.5

Labels: 0 background, 1 bone (tibia and fibula), 2 muscle, 3 fat (subcutis), 4 skin, 5 tumour (a deep sarcoma in
the posterior compartment). World coordinates are RAS millimetres (NIfTI convention): x to the patient's right...
left, y posterior to anterior, z inferior (ankle, distal) to superior (knee, proximal). The limb fills the first and
last axial slices: those are the tourniquet (proximal) and distal cuts. Nothing here is patient data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

LABELS = {"bone": 1, "muscle": 2, "fat": 3, "skin": 4, "tumour": 5}
LENGTH = 120.0  # mm, along z
SKIN = 3.0  # mm: 1.5 voxels at the default 2 mm (a real skin is about 2 mm)
FAT = 8.0  # mm of subcutis


def outline(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (mm) of the elliptic skin outline at height z (0 distal .. LENGTH proximal): the calf bulges."""
    s = z / LENGTH
    bulge = np.exp(-(((s - 0.75) / 0.35) ** 2))
    return 38.0 + 10.0 * s + 7.0 * bulge, 33.0 + 8.0 * s + 6.0 * bulge


def labels(voxel: float) -> tuple[np.ndarray, np.ndarray]:
    """The label volume (uint8, i-j-k = x-y-z) and its affine (voxel indices to RAS mm)."""
    half = 60.0
    n_xy = int(np.ceil(2 * half / voxel))
    n_z = int(round(LENGTH / voxel))
    x = (np.arange(n_xy) + 0.5) * voxel - half
    z = (np.arange(n_z) + 0.5) * voxel
    X, Y, Z = np.meshgrid(x, x, z, indexing="ij")
    a, b = outline(Z)
    # elliptic "depth" below the skin surface, in mm (exact on the axes, close elsewhere)
    rho = np.sqrt((X / a) ** 2 + (Y / b) ** 2)
    depth = (1.0 - rho) * np.sqrt(a * b)
    out = np.zeros(X.shape, np.uint8)
    out[depth >= 0] = LABELS["skin"]
    out[depth >= SKIN] = LABELS["fat"]
    out[depth >= SKIN + FAT] = LABELS["muscle"]
    # layers at least two voxels apart: thinner slivers of muscle fold when the surfaces are smoothed
    tibia = ((X - 6.0) / 10.0) ** 2 + ((Y - 10.0) / 8.0) ** 2 <= 1.0  # anterior-medial, triangular in life
    fibula = (X + 15.0) ** 2 + (Y - 6.0) ** 2 <= 5.5**2  # lateral
    out[tibia | fibula] = LABELS["bone"]
    tumour = ((X + 2.0) / 18.0) ** 2 + ((Y + 14.0) / 12.0) ** 2 + ((Z - 70.0) / 24.0) ** 2 <= 1.0  # posterior calf
    out[tumour] = LABELS["tumour"]
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [x[0], x[0], z[0]]  # centre of voxel (0, 0, 0)
    return out, affine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("synthetic-leg.nii.gz"))
    parser.add_argument("--voxel", type=float, default=2.0, help="voxel edge in mm (default 2; structures thinner than two voxels fold when smoothed)")
    args = parser.parse_args(argv)
    import nibabel

    data, affine = labels(args.voxel)
    image = nibabel.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(affine, code=1)  # scanner coordinates, as a segmentation tool writes them
    image.set_sform(affine, code=1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(image, str(args.output))
    counts = {name: int((data == value).sum()) for name, value in LABELS.items()}
    print(f"wrote {args.output}: {data.shape} voxels of {args.voxel:g} mm; voxels per label {counts}")


if __name__ == "__main__":
    main()
