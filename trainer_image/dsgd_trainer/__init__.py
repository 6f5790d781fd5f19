"""dsgd's trainer: torch.distributed SGD algorithms launched by torchrun.

Importing this package (and `dsgd_trainer.config`) needs no torch: the operator
imports the config models from here.
"""
