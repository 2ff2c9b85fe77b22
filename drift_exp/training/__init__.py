"""Model loading (real and tiny) and the DPO training stage."""
