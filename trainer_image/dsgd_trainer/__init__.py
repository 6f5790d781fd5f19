"""dsgd's trainer: torch.distributed SGD algorithms launched by torchrun.

It reads the training config, and speaks the pod contract, through
`dsgd_contract`; it never imports the operator.
"""
