"""Inference runtimes behind one calling convention: ONNX export, ONNX Runtime, OpenVINO (ONNX and the original IR)."""
