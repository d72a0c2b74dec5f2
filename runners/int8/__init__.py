"""INT8 quantization beyond the quantize step's single modes: graph preparation and the
per-operator choice of `quantize: {mode: auto}`."""
