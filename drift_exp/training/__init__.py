"""The DPO training stage: TRL DPOTrainer, DeepSpeed ZeRO-3, truncation, guards and §5 diagnostics."""
