"""Storage: atomic writes, safetensors checkpoints, the OpenVINO IR reader, sha256-pinned downloads."""
