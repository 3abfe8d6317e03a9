"""The embedded DBRX-style MoE trainer (PyTorch, no JAX): model, HF interop; training loop to come."""
