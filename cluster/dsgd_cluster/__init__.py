"""A real, local Kubernetes control plane for dsgd's tests and `make cluster`.

`control_plane` starts etcd, kube-apiserver, kube-controller-manager and
kube-scheduler built from the official Go modules (cluster/go.mod), and
`node_agent` plays the kubelets: it registers Nodes and runs bound pods as local
processes through the same rewrite as `dsgd run`.
"""
