"""Export toolkit: TorchScript and ONNX export, runtimes and the parity checker (issue 4)."""
