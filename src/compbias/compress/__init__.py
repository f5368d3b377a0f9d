"""Compressed checkpoints, one directory per (model, variant): mlx_lm conversion and affine
quantization (:mod:`.checkpoints`), GGUF import into HF/MLX layout (:mod:`.gguf`), unstructured
pruning (:mod:`.pruning`) and the perturbation controls (:mod:`.perturb`). Each checkpoint carries
one manifest that says how it was built."""
