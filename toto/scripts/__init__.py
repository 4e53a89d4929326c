"""Toto 1.0's fine-tuning scripts (`toto.scripts.finetune_toto`, `toto.scripts.benchmark_finetuning`), as thin
layers over `train/` (see `toto-train` for the command line)."""
