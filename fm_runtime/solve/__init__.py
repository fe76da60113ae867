"""Numerical core: solvers (fixed-step tableaus and dopri5), time schedules, seeded noise,
likelihood integration and sample metrics. numpy only: no onnxruntime, no model files."""
