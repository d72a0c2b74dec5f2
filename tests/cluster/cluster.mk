# The local Kubernetes control plane (see tests/cluster/README.md). Included by the root Makefile.
CLUSTER_PY := $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: cluster-build cluster-up cluster-down cluster-status

cluster-build:  ## build the pinned Kubernetes binaries into ~/.cache/kondense (once per pin)
	@tests/cluster/build.sh

cluster-up:  ## start the control plane and the nodes (kubelet, containerd, kube-proxy), build and push the images (reuses a healthy cluster)
	@$(CLUSTER_PY) tests/cluster/controlplane.py up

cluster-down:  ## stop the local cluster and remove .cluster/
	@$(CLUSTER_PY) tests/cluster/controlplane.py down

cluster-status:  ## show the local cluster's components and nodes
	@$(CLUSTER_PY) tests/cluster/controlplane.py status
