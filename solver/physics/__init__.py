"""One module per equation: pressure, heat, transport (tissue drug), circuit (0D), tnf, metabolism."""
