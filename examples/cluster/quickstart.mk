# `make quickstart` (examples/cluster/): the local cluster, the chart, then the quickstart script.
# Included by the root Makefile.
.PHONY: quickstart

quickstart: $(STAMP) examples/models/digits-cnn.ts  ## on the local cluster: cluster-up, cluster-install, then examples/cluster/quickstart.py (an S3 server in a pod, a job s3:// -> s3:// and one pvc:// -> pvc://, artifacts downloaded); fails if any step does
	$(MAKE) --no-print-directory cluster-up
	$(MAKE) --no-print-directory cluster-install
	KUBECONFIG=$(CURDIR)/.cluster/kubeconfig PATH=$(CURDIR)/.cluster/bin:$$PATH \
	  $(PY) examples/cluster/quickstart.py
