"""Hand-written kernels XLA calls through its FFI where its own are slow (cpu_conv), and
rewrites of the calls XLA:CPU handles pathologically (xla_conv)."""
