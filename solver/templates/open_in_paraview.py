"""Open an isolimb result in ParaView: the limb as a faint outline, each region thresholded, the tumour as a
surface and a slice through the tumour centre, coloured by one field with its own colour map and range.

    pvpython open_in_paraview.py                    # interactive window (ParaView's Python)
    pvbatch open_in_paraview.py --png view.png      # no window: write a picture
    pvbatch open_in_paraview.py --field T_degC --time 30 --png t30.png

or, in the ParaView GUI, View > Python Shell > Run Script. ParaView >= 5.12 reads ``fields.vtkhdf``; older
versions read ``fields.xdmf``. Written by ``isolimb run``; the settings below were read off this result.
"""

import argparse
import os
import sys

from paraview import servermanager
from paraview import simple as pv

SETTINGS: dict = {}  # filled in by isolimb


def folder() -> str:
    here = globals().get("__file__")
    if here and os.path.exists(os.path.join(os.path.dirname(os.path.abspath(here)), "summary.json")):
        return os.path.dirname(os.path.abspath(here))
    return SETTINGS["folder"]


def open_reader(results: str):
    pm = servermanager.vtkSMProxyManager
    version = (pm.GetVersionMajor(), pm.GetVersionMinor())
    vtkhdf, xdmf = os.path.join(results, "fields.vtkhdf"), os.path.join(results, "fields.xdmf")
    if version >= (5, 12) and os.path.exists(vtkhdf):
        return pv.VTKHDFReader(FileName=[vtkhdf])
    if os.path.exists(xdmf):
        return pv.Xdmf3ReaderT(FileName=[xdmf])
    sys.exit(f"ParaView {version[0]}.{version[1]} needs fields.xdmf (>= 5.12 reads fields.vtkhdf); neither here")


def colour(display, view, field: str) -> None:
    association = "CELLS" if field in SETTINGS["cell_fields"] else "POINTS"
    pv.ColorBy(display, (association, field))
    lut = pv.GetColorTransferFunction(field)
    lut.ApplyPreset(SETTINGS["colour_maps"].get(field, "Viridis (matplotlib)"), True)
    lo, hi = SETTINGS["ranges"].get(field, (0.0, 1.0))
    lut.AutomaticRescaleRangeMode = "Never"
    lut.RescaleTransferFunction(lo, hi if hi > lo else lo + 1.0)
    display.SetScalarBarVisibility(view, True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="open an isolimb result in ParaView")
    parser.add_argument("--field", default=SETTINGS["default_field"], choices=sorted(SETTINGS["ranges"]))
    parser.add_argument("--time", type=float, help="minutes (default: the last output time)")
    parser.add_argument("--png", help="write a picture to this file instead of opening a window")
    args = parser.parse_args(argv)
    reader = open_reader(folder())
    reader.UpdatePipelineInformation()
    times = list(reader.TimestepValues) or [0.0]
    t = times[-1] if args.time is None else min(times, key=lambda s: abs(s - 60.0 * args.time))
    view = pv.GetActiveViewOrCreate("RenderView")
    view.ViewTime = t
    pv.GetAnimationScene().AnimationTime = t
    view.OrientationAxesVisibility = 1
    limb = pv.Show(reader, view)
    limb.SetRepresentationType("Outline")
    for name, region_id in SETTINGS["regions"].items():  # one threshold per region, hidden but ready
        region = pv.Threshold(registrationName=name, Input=reader, Scalars=["CELLS", "region"])
        region.LowerThreshold = region.UpperThreshold = region_id
        shown = pv.Show(region, view)
        shown.Opacity = 0.25 if name == "tumour" else 0.1
        colour(shown, view, args.field)
        if name not in ("tumour",):
            pv.Hide(region, view)
    centre = SETTINGS["tumour_centre"]
    cut = pv.Slice(registrationName="slice through tumour centre", Input=reader)
    cut.SliceType = "Plane"
    cut.SliceType.Origin = centre
    cut.SliceType.Normal = [1.0, 0.0, 0.0]
    colour(pv.Show(cut, view), view, args.field)
    if hasattr(pv, "Hide3DWidgets"):  # a GUI helper: ParaView 5.13's pvbatch has none (AttributeError there)
        pv.Hide3DWidgets(proxy=cut.SliceType)
    size = SETTINGS["size"]
    view.CameraFocalPoint = centre
    view.CameraPosition = [centre[0] + 3.0 * size, centre[1], centre[2]]
    view.CameraViewUp = [0.0, 0.0, 1.0]
    view.ResetCamera(False)
    pv.Render(view)
    if args.png:
        pv.SaveScreenshot(args.png, view, ImageResolution=[1200, 900])
        print(f"wrote {args.png} ({args.field} at {t / 60.0:.1f} min)")
    elif hasattr(pv, "Interact"):
        pv.Interact(view)


if __name__ == "__main__":
    main(sys.argv[1:])
