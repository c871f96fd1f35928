"""The sparsity track (arXiv 2502.09151, Taheri & Lederer): ℓ1-regularised diffusion training
and the steps-to-quality study. Modules: `penalties` (soft threshold, output penalties, proximal
steps), `toy_data` (coordinate-sparse / rotated / 3-D toy data), `samplers` (DDPM and DDIM at any
K), `metrics` (SW2, MMD, support, modes, K*), `study` (one train + evaluate run),
`x0_threshold` (the training-free variant for analytical denoisers). See docs/sparsity.md.
"""
