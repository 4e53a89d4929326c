"""Training stack for Toto 1.0 and 2.0: Lightning pretraining and fine-tuning driven by YAML configs (`toto-train`).

Modules, in the order data flows through them:
  sources     read series (Hugging Face `datasets`, CSV/Parquet tables, the synthetic generator)
  synthetic   the observability-style synthetic series generator used for pretraining
  windows     cut series into context + horizon training windows and batch them
  datamodule  the LightningDataModule that mixes sources and serves train/validation windows
  losses      the objectives: Student-T mixture NLL + Barron robust loss (1.0), pinball loss (2.0)
  schedule    the warmup-stable-decay learning-rate schedule
  base_module what both LightningModules share: AdamW + schedule, logging, skipping non-finite steps
  module      the LightningModule around `Toto`
  module_v2   the LightningModule around Toto 2.0's `Toto2Model`: hidden-horizon quantile objective
  lora        LoRA adapters through peft, and merging them into u-muP layers for export
  callbacks   progress lines, the loss curve (CSV + PNG) and export at the end of `fit`
  export      turn a Lightning checkpoint into a `from_pretrained` folder (1.0 or 2.0)
  cli         the LightningCLI command line
"""
