# Benchmarks (included by the root Makefile). Figures come from these, never from timed tests.

.PHONY: bench-quality

bench-quality: $(STAMP)  ## MiniLM size/latency/cosine: ORT FP32, kondense INT8 dynamic/static, FP16, two common baselines
	@mkdir -p build
	$(VENV)/bin/python -m bench.quality --json build/bench-quality.json

.PHONY: bench-quality-distill

bench-quality-distill: $(STAMP)  ## bench-quality plus distilled 3-layer MiniLM rows (FP32, INT8); trains a student first (minutes)
	@mkdir -p build
	$(VENV)/bin/python -m bench.quality --with-distill --json build/bench-quality-distill.json
