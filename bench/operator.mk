# The operator's benchmark (included by the root Makefile). Needs the local control plane.
.PHONY: bench-operator

bench-operator: $(STAMP)  ## apply 100 CompressionJobs at once: p50/p99 apply->Job and apply->Running, operator peak RSS
	$(MAKE) --no-print-directory cluster-up
	@mkdir -p build
	$(VENV)/bin/python bench/operator_bench.py --jobs 100 --json build/bench-operator.json
