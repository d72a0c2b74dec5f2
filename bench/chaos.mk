# The chaos benchmark (included by the root Makefile). Needs the local control plane and Go
# (Toxiproxy is built from its module once). Restarts the shared cluster's kube-apiserver once.
# While it is down (about a minute on a loaded machine) the nodes may go NotReady for as long.
.PHONY: chaos

chaos: $(STAMP)  ## 100 CompressionJobs through 20 operator SIGKILLs, an apiserver restart, Toxiproxy faults, two replicas; prints the invariant counts
	$(MAKE) --no-print-directory cluster-up
	@tests/cluster/toxiproxy/build.sh >/dev/null
	@mkdir -p build
	$(VENV)/bin/python bench/chaos.py --jobs 100 --kills 20 --json build/chaos.json
