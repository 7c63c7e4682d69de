"""The VLA model family: vision encoder -> language backbone -> action head (discrete, diffusion, flow).

Import the pieces from their modules (`config`, `model`, `presets`, `policy`, ...); this package
file stays empty so that importing one module does not build or import everything else.
"""
