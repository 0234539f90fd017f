"""Paper-agnostic building blocks: configs, training, data, sharding, language models.

Arrows point down: paper packages import `core`, `core` never imports a paper.
"""
