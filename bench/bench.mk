# Benchmarks (included by the root Makefile). Figures come from these, never from timed tests.

.PHONY: bench-quality bench-quality-quick

bench-quality: $(STAMP)  ## MiniLM size/latency/cosine: ORT FP32, kondense INT8 dynamic/static, FP16, two common baselines, distilled 3-layer (+INT8); trains a student first (minutes)
	@mkdir -p build
	$(VENV)/bin/python -m bench.quality --with-distill --json build/bench-quality.json

bench-quality-quick: $(STAMP)  ## bench-quality without the distilled rows (no training)
	@mkdir -p build
	$(VENV)/bin/python -m bench.quality --json build/bench-quality-quick.json
