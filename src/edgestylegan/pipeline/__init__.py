"""One run_<stage>(...) per DVC stage: the orchestration stages/*.py call (layer 3, above every method package)."""
