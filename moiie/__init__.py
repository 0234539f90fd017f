"""MoIIE: Mixture of Intra- and Inter-Modality Experts for LVLMs (arXiv 2508.09779), in JAX / Flax NNX.

routing.py (modality-aware routers, aux losses), experts.py (reference / sparse / einsum execution paths),
layer.py (the MoE layer), upcycle.py (dense FFN -> MoIIE, decoder forward on embeddings), lvlm.py (ViT +
projector + core/llm decoder), vqa.py (easy-VQA sequences), training.py (stages 0-2, evaluation), report.py.
"""
