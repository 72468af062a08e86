"""Layer 3: absorbed dose. S-value sources, organ-level MIRD, sphere model for lesions."""
