"""Reading and writing model files: the formats kondense accepts, ONNX files, torch modules and
the Hugging Face files a model carries besides its weights.

formats       which format a file is; pickled checkpoints refused
onnx_files    ONNX validation, external data, saving and sizes
float16       FP16 conversion of an ONNX file tensor by tensor
torch_modules PyTorch models as tensor modules: Hugging Face, TorchScript, torch.export
architecture  networks defined in code: a callable builds the module, safetensors fill it
assets        the tokenizer/config files a model carries, and where they are

Light: importing the package or any module here imports neither torch nor onnx.
"""

# The file name of an ONNX model kondense writes: by each ONNX step and in the published output.
MODEL_FILE = "model.onnx"
