# The local Kubernetes control plane (see tests/cluster/README.md). Included by the root Makefile.
CLUSTER_PY := $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: cluster-build cluster-up cluster-down cluster-status

cluster-build:  ## build the pinned Kubernetes binaries into ~/.cache/kondense (once per pin)
	@tests/cluster/build.sh

cluster-up:  ## start etcd, apiserver, scheduler, controller-manager and the node agent (reuses a healthy one)
	@$(CLUSTER_PY) tests/cluster/controlplane.py up

cluster-down:  ## stop the local cluster and remove .cluster/
	@$(CLUSTER_PY) tests/cluster/controlplane.py down

cluster-status:  ## show the local cluster's components and nodes
	@$(CLUSTER_PY) tests/cluster/controlplane.py status
