"""Layer 1: physics. Nuclide data, decay, photon interaction data, absorbed fractions,
sphere S-values and radiobiology. Knows nothing of files, databases or HTTP."""
