"""Data shipped with mdcvkit: small real trajectories and the scripts that made them."""
