"""Layer 2: kinetics. Time-activity models with analytic integrals and gradients, weighted
least-squares fitting with covariance, model selection and single-time-point methods."""
