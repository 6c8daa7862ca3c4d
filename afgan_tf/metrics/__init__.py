"""Metrics: equivariance (EQ-T, EQ-T_frac, EQ-R), FID/KID, power spectra; toy generators for tests/demos."""
