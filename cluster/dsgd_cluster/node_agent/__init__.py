"""The node agent: kubelets for a local cluster whose containers are local processes.

See `container.py` for what of a pod's spec is honoured, rewritten and ignored,
and `agent.py` for the lifecycle it reports.
"""
