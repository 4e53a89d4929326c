"""Toto 1.0's fine-tuning data module path (`toto.data.datamodule.finetune_datamodule`)."""
