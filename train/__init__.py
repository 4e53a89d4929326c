"""Training stack for Toto: Lightning pretraining and fine-tuning driven by YAML configs (`toto-train`).

Modules, in the order data flows through them:
  sources     read series (Hugging Face `datasets`, CSV/Parquet tables, the synthetic generator)
  synthetic   the observability-style synthetic series generator used for pretraining
  windows     cut series into context + next-patch training windows and batch them
  datamodule  the LightningDataModule that mixes sources and serves train/validation windows
  losses      the Toto objective: Student-T mixture NLL + Barron robust loss
  schedule    the warmup-stable-decay learning-rate schedule
  module      the LightningModule around `Toto`
  callbacks   progress lines, the loss curve (CSV + PNG) and export at the end of `fit`
  export      turn a Lightning checkpoint into a `Toto.from_pretrained` folder
  cli         the LightningCLI command line
"""
