"""Layer 5: the case schema, the pipeline that runs a case, provenance."""
