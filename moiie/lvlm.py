"""The LVLM of MoIIE (arXiv 2508.09779, sec. 3.1, Fig. 2): vision encoder -> MLP projector -> LLM decoder whose
image-token positions carry modality id VISION and text positions TEXT, so that MoIIE layers route each token
over its own modality's experts.

  * `ViT`: a patch encoder (Dosovitskiy et al. 2021, eq. 1-4: linear patch embedding, learned positions, pre-norm
    transformer blocks). No pretrained vision encoder ships offline, so it is pretrained here on the easy-VQA
    training images (stage 0: shape and color classification heads on the mean patch feature) and then frozen,
    as the paper freezes its SigLIP encoder.
  * `Projector`: Linear-GELU-Linear (LLaVA-1.5's MLP projector, which Bunny uses), trained in stages 1 and 2.
  * the decoder: a `core.llm` Llama (a tiny random one from config, or SmolLM2-135M-Instruct), run on input
    embeddings by `moiie.upcycle.decoder_forward`.

Image features are placed at the positions where `image_mask` is True, in order, so the modality ids come from
where image tokens sit (`modality_ids`), not from a fixed layout.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from core.llm import model as llm_model
from moiie import routing, upcycle


class ViTBlock(nnx.Module):
  def __init__(self, dim: int, heads: int, mlp_dim: int, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attn = nnx.MultiHeadAttention(num_heads=heads, in_features=dim, decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.fc1 = nnx.Linear(dim, mlp_dim, rngs=rngs)
    self.fc2 = nnx.Linear(mlp_dim, dim, rngs=rngs)

  def __call__(self, x):
    x = x + self.attn(self.norm1(x))
    return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))


class ViT(nnx.Module):
  """Patch encoder: uint8/float images [B, H, W, 3] -> patch features [B, (H/p)(W/p), dim]."""

  def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, heads: int, mlp_dim: int,
               num_shapes: int, num_colors: int, rngs: nnx.Rngs):
    if image_size % patch_size:
      raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}. Fix: choose a "
                       "patch size dividing the image size (easy-VQA images are 64x64: 4, 8, 16).")
    self.image_size, self.patch_size = image_size, patch_size
    n = (image_size // patch_size) ** 2
    self.patch_embed = nnx.Linear(patch_size * patch_size * 3, dim, rngs=rngs)
    self.pos = nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (1, n, dim)))
    self.blocks = nnx.List([ViTBlock(dim, heads, mlp_dim, rngs) for _ in range(depth)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    # stage-0 pretraining heads (shape, color): the only supervision available offline for the encoder
    self.shape_head = nnx.Linear(dim, num_shapes, rngs=rngs)
    self.color_head = nnx.Linear(dim, num_colors, rngs=rngs)

  def check_images(self, images) -> None:
    want = (self.image_size, self.image_size, 3)
    if images.ndim != 4 or tuple(images.shape[1:]) != want:
      raise ValueError(f"images of shape {tuple(images.shape)} do not fit the vision encoder, which takes "
                       f"[batch, {want[0]}, {want[1]}, 3]. Fix: resize the images to {want[0]}x{want[1]} RGB or "
                       "set vision.image_size to their size.")

  def __call__(self, images):
    self.check_images(images)
    b, p = images.shape[0], self.patch_size
    g = self.image_size // p
    x = images.astype(jnp.float32) / 255.0 - 0.5
    x = x.reshape(b, g, p, g, p, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, g * g, p * p * 3)
    x = self.patch_embed(x) + self.pos.get_value()
    for block in self.blocks:
      x = block(x)
    return self.norm(x)

  def classify(self, images):
    feats = jnp.mean(self(images), axis=1)
    return self.shape_head(feats), self.color_head(feats)


class Projector(nnx.Module):
  def __init__(self, in_dim: int, out_dim: int, rngs: nnx.Rngs):
    self.fc1 = nnx.Linear(in_dim, out_dim, rngs=rngs)
    self.fc2 = nnx.Linear(out_dim, out_dim, rngs=rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x)))


def pool_patches(x: jax.Array, pool: int) -> jax.Array:
  """Average-pools a square patch grid [B, g*g, d] by `pool` per side (fewer image tokens for the LLM)."""
  if pool == 1:
    return x
  b, n, d = x.shape
  g = int(round(n ** 0.5))
  x = x.reshape(b, g // pool, pool, g // pool, pool, d).mean(axis=(2, 4))
  return x.reshape(b, (g // pool) ** 2, d)


def modality_ids(image_mask: jax.Array) -> jax.Array:
  """Per-token modality ids from where image tokens sit: VISION at image positions, TEXT elsewhere."""
  return jnp.where(image_mask.astype(bool), routing.VISION, routing.TEXT).astype(jnp.int32)


def place_images(text_embeddings: jax.Array, image_tokens: jax.Array, image_mask: jax.Array) -> jax.Array:
  """The j-th True position of each row of image_mask [B, T] takes image_tokens[:, j]; other rows keep text."""
  chex.assert_rank([text_embeddings, image_tokens], 3)
  if not isinstance(image_mask, jax.core.Tracer):  # concrete (eager) masks are checked; jitted callers build them
    counts = set(np.asarray(image_mask).astype(bool).sum(axis=1).tolist()) - {0}
    if counts - {image_tokens.shape[1]}:
      raise ValueError(f"image_mask marks {sorted(counts)} image slots per row, but each image gives "
                       f"{image_tokens.shape[1]} tokens. Fix: build the sequences with num_image_tokens = "
                       f"{image_tokens.shape[1]} ((vision.image_size / vision.patch_size / vision.image_pool)^2).")
  index = jnp.clip(jnp.cumsum(image_mask.astype(jnp.int32), axis=1) - 1, 0, image_tokens.shape[1] - 1)
  gathered = jnp.take_along_axis(image_tokens, index[..., None], axis=1)
  return jnp.where(image_mask[..., None].astype(bool), gathered.astype(text_embeddings.dtype), text_embeddings)


class LVLM(nnx.Module):
  """ViT + projector + Llama. `llm` may be dense or upcycled (MoIIE layers on every other block)."""

  def __init__(self, vit: ViT, projector: Projector, llm: llm_model.Llama, image_pool: int):
    self.vit = vit
    self.projector = projector
    self.llm = llm
    self.image_pool = image_pool

  @property
  def num_image_tokens(self) -> int:
    g = self.vit.image_size // self.vit.patch_size // self.image_pool
    return g * g

  def image_features(self, images):
    """Pooled patch features of the frozen encoder, [B, N, vision dim]."""
    return jax.lax.stop_gradient(pool_patches(self.vit(images), self.image_pool))

  def __call__(self, images, tokens, image_mask, attention_mask, image_features=None, route_mask=None):
    """Logits [B, T, V] and MoE aux terms for a batch: images [B, H, W, 3], tokens/masks [B, T].

    Token ids at image positions are ignored (their embeddings are replaced by projected patches).
    `image_features` (from `image_features`) may replace `images`: the encoder is frozen after stage 0, so
    training caches its output once per image instead of recomputing it every step (the same numbers).
    `route_mask` [B, T] (default: `attention_mask`) marks the tokens the MoE layers route and count in their aux
    terms and loads; evaluation clears it on the rows that only pad its last batch to the compiled shape.
    """
    feats = self.image_features(images) if image_features is None else image_features
    image_tokens = self.projector(feats)
    h = place_images(self.llm.embed_tokens(tokens), image_tokens, image_mask)
    positions = llm_model.positions_from_mask(attention_mask)
    return upcycle.decoder_forward(self.llm, h, positions, attention_mask, modality_ids(image_mask),
                                   attention_mask if route_mask is None else route_mask)
