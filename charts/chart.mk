# The Helm chart: Helm built from its Go module (tests/chart/go), lint, CRD sync.
# Included by the root Makefile.

HELM_BUILD := tests/chart/go/build.sh
CHART      := charts/kondense

.PHONY: helm chart-lint chart-sync-crd chart-test cluster-install

helm:  ## build (once) the pinned Helm from its Go module and print its path
	@$(HELM_BUILD)

chart-sync-crd:  ## copy crds/*.yaml into the chart (templates/crds/ renders them, so helm upgrade updates them)
	cp crds/compressionjob.yaml crds/compressionsearch.yaml $(CHART)/files/crds/

chart-lint:  ## helm lint --strict the chart with its default values
	"$$($(HELM_BUILD))" lint --strict $(CHART)

chart-test: $(STAMP)  ## the chart's tests (lint, schema, images; install/upgrade on the local control plane)
	$(VENV)/bin/pytest tests/chart

# The example's model and data (examples/cluster-digits-static-int8.yaml) are uploaded to the
# cluster's S3 server, so the printed first job runs as it is.
cluster-install: $(STAMP) examples/models/digits-cnn.ts  ## after `make cluster-up`: install the chart into kondense-system with the images built here, wait until the operator is Available, print a first job
	$(PY) scripts/cluster-install.py
