"""dsgd's operator side: the API models, pure builders, the CLI and kopf handlers.

Nothing here imports torch or the trainer: what both sides share is in `dsgd_contract`.
"""
