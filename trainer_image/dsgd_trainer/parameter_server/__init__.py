"""Downpour SGD's parameter servers (Dean et al. 2012): one process per `<job>-ps-<i>` pod.

Each server holds one contiguous, size-balanced shard of the flattened model
(sharding.py), applies the workers' pushes as they arrive with Adagrad or SGD
(update_rules.py, shard.py) and serves fetches, over torch.distributed.rpc
(rpc_world.py, service.py). `python -m dsgd_trainer.parameter_server` runs one;
the workers' side is dsgd_trainer.algorithms.downpour.
"""
