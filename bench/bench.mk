# Benchmarks (included by the root Makefile). Figures come from these, never from timed tests.

.PHONY: bench-quality bench-quality-quick bench-large bench-search

bench-quality: $(STAMP)  ## size/latency/quality of every recipe side by side with its baselines: MiniLM (ORT FP32, kondense auto/dynamic/static/FP16, ORT and torch quantize_dynamic, distilled 3-layer +INT8) and two CNNs (FP32, dynamic, auto); the CPU's flags; a Pareto chart (build/bench-quality.png); trains a student first (minutes)
	@mkdir -p build
	$(VENV)/bin/python -m bench.quality --with-distill --with-cnns --json build/bench-quality.json --chart build/bench-quality.png

bench-quality-quick: $(STAMP)  ## bench-quality's MiniLM rows without the distilled ones (no training) and without the CNNs
	@mkdir -p build
	$(VENV)/bin/python -m bench.quality --json build/bench-quality-quick.json --chart build/bench-quality-quick.png

BENCH_LARGE_SIZES ?= 2.5,6
BENCH_LARGE_BERT ?= 1.2
bench-large: $(STAMP)  ## peak memory per stage of optimize + dynamic and static INT8 on ~2.5 GB and ~6 GB ONNX models built with random weights under /tmp (BENCH_LARGE_SIZES=2.5 for one), and of export alone and export + dynamic INT8 on a ~1.2 GB BERT-like PyTorch model (BENCH_LARGE_BERT= for none); its ratio to the model's bytes, wall time and result size (minutes; needs ~5x the torch model, ~3x the largest ONNX model in free memory and disk)
	$(VENV)/bin/python -m bench.large --sizes $(BENCH_LARGE_SIZES) --bert "$(BENCH_LARGE_BERT)"

BENCH_SEARCH ?= examples/digits-search.yaml
bench-search: $(STAMP) examples/models/digits-cnn.ts examples/models/minilm  ## wall time of a CompressionSearch run locally in sequence and with 2 processes, side by side with the ratio and the CPU's flags (BENCH_SEARCH="examples/digits-search.yaml examples/minilm-search.yaml" adds MiniLM: tens of minutes on 2 cores)
	$(VENV)/bin/python -m bench.search $(BENCH_SEARCH)
