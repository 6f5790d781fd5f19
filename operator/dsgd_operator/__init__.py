"""dsgd's operator side: the API models, pure builders, the CLI and kopf handlers.

Nothing here imports torch; the trainer lives in `dsgd_trainer`.
"""
