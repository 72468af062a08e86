"""Layer 7: report rendering (HTML, following the EANM dosimetry reporting checklist)."""
