"""The embedded DBRX-style MoE trainer (PyTorch, no JAX).

settings (the `train:` config section) and config (model presets), both without torch -> model (the decoder) +
loss (chunked output cross-entropy) -> data (the MDS curriculum) -> optim, parallel (devices, FSDP2, checkpointing,
compile), checkpoint -> train (the loop, MLflow); launch decides where `dataprep train` runs; hf maps weights to
transformers' DbrxForCausalLM.
"""
