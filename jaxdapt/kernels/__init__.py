"""Hand-written kernels XLA calls through its FFI where its own are slow (cpu_conv)."""
