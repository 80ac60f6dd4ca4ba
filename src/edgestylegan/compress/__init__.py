"""Model compression: unstructured pruning, sparse storage, int8 post-training quantization, ONNX export."""
