"""Weight-only quantized storage for fast memory-bound decode (LLM.int8-style per-channel absmax, Dettmers et
al. 2022, arXiv 2208.07339 sec. 3.1 without the outlier split; 4-bit per-group asymmetric as GGML's Q4_1 /
GPTQ's grouping, Frantar et al. 2022, arXiv 2210.17323).

Batch-1 decode reads every weight once per token, so its speed is weight bytes over memory bandwidth. The
formats here cut the bytes and keep the arithmetic in float32 (or the model's compute dtype):

  * 'int8': q int8 [out, in], scale f32 [out];                       w = q * scale[:, None]
  * 'int8x2': q, q_lo int8 [out, in], scale f32 [out];               w = (q + q_lo / 254) * scale[:, None]
            (two int8 "digits": the residual of the int8 rounding quantized again, ~15-bit precision in
            the bytes of bf16, so that the int8 kernels below run it with near-float accuracy)
  * 'int4': packed uint8 [out, in/2] (low nibble = input channel j, high nibble = channel j + in/2),
            scale, zero f32 [out, in/group];                          w = q * scale + zero (per group)

Quantization runs on the host in numpy when weights are loaded (`quantize`), and `dequantize` (numpy) inverts it
for export. Inside jitted code `matmul` dequantizes one matrix next to its use and contracts it with float32
accumulation. A 4-bit group of 32 with min/scale reproduces a GGUF Q4_1 tensor exactly, so a Q4_1 source loses
nothing more when kept in 'int4'.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


# The second int8 digit's step: the first digit's rounding error lies in [-step/2, step/2], so step/254 maps it
# onto [-127, 127].
LOW_DIGIT = 254.0


def _quantize_block(w: np.ndarray, fmt: str, group_size: int) -> dict[str, np.ndarray]:
  if fmt in ("int8", "int8x2"):
    amax = np.abs(w).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(w / scale[:, None]), -127, 127).astype(np.int8)
    if fmt == "int8":
      return {"q": q, "scale": scale}
    residual = w - q.astype(np.float32) * scale[:, None]
    q_lo = np.clip(np.rint(residual / (scale[:, None] / LOW_DIGIT)), -127, 127).astype(np.int8)
    return {"q": q, "q_lo": q_lo, "scale": scale}
  if fmt == "int4":
    out, cin = w.shape
    if cin % (2 * group_size):
      raise ValueError(f"int4 needs the input width ({cin}) to be a multiple of 2*group_size "
                       f"({2 * group_size}).")
    groups = w.reshape(out, cin // group_size, group_size)
    lo, hi = groups.min(-1), groups.max(-1)
    scale = ((hi - lo) / 15.0).astype(np.float32)
    safe = np.where(scale > 0, scale, 1.0)
    q = np.clip(np.rint((groups - lo[..., None]) / safe[..., None]), 0, 15).astype(np.uint8).reshape(out, cin)
    half = cin // 2
    packed = (q[:, :half] | (q[:, half:] << 4)).astype(np.uint8)
    return {"packed": packed, "scale": scale, "zero": lo.astype(np.float32)}
  raise ValueError(f"unknown quantized format {fmt!r}; expected 'int8', 'int8x2' or 'int4'.")


def _dequantize_block(arrays: dict[str, np.ndarray], fmt: str) -> np.ndarray:
  if fmt == "int8":
    return np.asarray(arrays["q"], np.float32) * np.asarray(arrays["scale"], np.float32)[:, None]
  if fmt == "int8x2":
    digits = np.asarray(arrays["q"], np.float32) + np.asarray(arrays["q_lo"], np.float32) / LOW_DIGIT
    return digits * np.asarray(arrays["scale"], np.float32)[:, None]
  if fmt == "int4":
    packed = np.asarray(arrays["packed"])
    q = np.concatenate([packed & 15, packed >> 4], axis=1).astype(np.float32)
    out, cin = q.shape
    scale = np.asarray(arrays["scale"], np.float32)
    group = cin // scale.shape[1]
    w = q.reshape(out, -1, group) * scale[..., None] + np.asarray(arrays["zero"], np.float32)[..., None]
    return w.reshape(out, cin)
  raise ValueError(f"unknown quantized format {fmt!r}; expected 'int8', 'int8x2' or 'int4'.")


def _anchor(x: jax.Array, dtype) -> jax.Array:
  """A scalar 1 that XLA cannot prove constant, computed from the activations `x`.

  Dequantizing weights does not depend on activations, so XLA:CPU would hoist every layer's dequantization to the
  start of the program and materialize all float weights at once (10x slower than the matmuls). Multiplying a
  per-channel factor by this anchor orders each layer's dequantization after its input, next to its use. 0*x is
  not folded for floats (NaN semantics); a non-finite x[0] falls back to 1.
  """
  one = x.reshape(-1)[0].astype(jnp.float32) * 0.0 + 1.0
  return jnp.where(one == 1.0, one, 1.0).astype(dtype)


@jax.custom_jvp
def _bfloat16_to_float32(w: jax.Array) -> jax.Array:
  bits = lax.bitcast_convert_type(w, jnp.uint16).astype(jnp.uint32) << 16
  return lax.bitcast_convert_type(bits, jnp.float32)


@_bfloat16_to_float32.defjvp
def _bfloat16_to_float32_jvp(primals, tangents):
  # Integer ops carry no derivative: without this rule every bfloat16 weight would get a zero gradient. The cast
  # is exact, so its derivative is the cast of the tangent.
  (w,), (t,) = primals, tangents
  return _bfloat16_to_float32(w), t.astype(jnp.float32)


def upcast(w: jax.Array, dtype, anchor: jax.Array | None = None) -> jax.Array:
  """Casts stored weights to the compute dtype (optionally ordered after `anchor`'s producer, see `_anchor`).

  bfloat16 -> float32 goes through the bit pattern (shift into the high half of a uint32): numerically the same
  cast, but XLA:CPU emits a vectorized integer op for it, while its native bf16 convert runs ~6x slower. Its
  derivative is the plain cast's (a custom JVP), so bfloat16 weights train.
  """
  dtype = jnp.dtype(dtype)
  if w.dtype == dtype:
    return w
  if w.dtype == jnp.bfloat16 and dtype == jnp.float32:
    w = _bfloat16_to_float32(w)
  else:
    w = w.astype(dtype)
  return w if anchor is None else w * anchor


def dense_weight(arrays: dict[str, jax.Array], fmt: str, dtype, anchor: jax.Array | None = None) -> jax.Array:
  """Dequantizes one matrix inside jitted code, returning it [out, in] in `dtype` (int8 formats: also gathered
  rows [..., in] with their scales [...])."""
  one = jnp.ones((), dtype) if anchor is None else anchor
  if fmt == "int8":
    return arrays["q"].astype(dtype) * (arrays["scale"].astype(dtype) * one)[..., None]
  if fmt == "int8x2":
    digits = arrays["q"].astype(dtype) + arrays["q_lo"].astype(dtype) * (1.0 / LOW_DIGIT)
    return digits * (arrays["scale"].astype(dtype) * one)[..., None]
  if fmt == "int4":
    packed = arrays["packed"]
    out, half = packed.shape
    scale, zero = arrays["scale"].astype(dtype) * one, arrays["zero"].astype(dtype)
    ngroups = scale.shape[1] // 2
    group = half // ngroups

    def part(q, s, z):
      return (q.astype(dtype).reshape(out, ngroups, group) * s[..., None] + z[..., None]).reshape(out, half)

    lo = part(packed & 15, scale[:, :ngroups], zero[:, :ngroups])
    hi = part(packed >> 4, scale[:, ngroups:], zero[:, ngroups:])
    return jnp.concatenate([lo, hi], axis=1)
  raise ValueError(f"unknown quantized format {fmt!r}.")


def _rows_at_least_two(x2d: jax.Array) -> jax.Array:
  # XLA:CPU sends a one-row int8 or bf16 dot to a slow generic loop but two rows to its fast (VNNI/AMX) kernels.
  return jnp.concatenate([x2d, x2d], axis=0) if x2d.shape[0] == 1 else x2d


def dot_nt(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., in] @ w [out, in]^T with float32 accumulation."""
  lead = x.shape[:-1]
  x2 = x.reshape(-1, x.shape[-1])
  rows = x2.shape[0]
  if x.dtype != jnp.float32:
    x2 = _rows_at_least_two(x2)
  y = lax.dot_general(x2, w, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
  return y[:rows].reshape(lead + (w.shape[0],))


def dot_nn(x: jax.Array, w: jax.Array) -> jax.Array:
  """x [..., in] @ w [in, out] with float32 accumulation."""
  lead = x.shape[:-1]
  x2 = x.reshape(-1, x.shape[-1])
  rows = x2.shape[0]
  if x.dtype != jnp.float32:
    x2 = _rows_at_least_two(x2)
  y = lax.dot_general(x2, w, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)
  return y[:rows].reshape(lead + (w.shape[1],))


def _int_dot(xq: jax.Array, q: jax.Array) -> jax.Array:
  """Exact int8 x int8 -> int32 product xq [rows, in] @ q [out, in]^T, as float32."""
  rows = xq.shape[0]
  acc = lax.dot_general(_rows_at_least_two(xq), q, (((1,), (1,)), ((), ())), preferred_element_type=jnp.int32)
  return acc[:rows].astype(jnp.float32)


def int8_dot(x: jax.Array, arrays: dict[str, jax.Array], activations: str = "int8") -> jax.Array:
  """x [..., in] @ W^T for int8 / int8x2 weights, with x quantized per row (LLM.int8() vector-wise quantization,
  Dettmers et al. 2022, sec. 3.1, without the outlier split) and every product in exact int32 arithmetic on
  XLA:CPU's VNNI/AMX int8 kernels. Returns float32 [..., out].

  activations='int8': each row of x is rounded to int8 by its absmax (lossy: activation outliers stretch the
  step). 'int8x2': the row's rounding residual becomes a second int8 row (step / 254), stacked under the first
  so that one dot reads the weights once for both; a matvec at batch 1 runs as a two-row dot anyway (see
  `_rows_at_least_two`), so the second digit is nearly free there. With 'int8x2' weights the low weight digit is
  multiplied by the high activation digit only (the low x low term is below both digits' precision).
  """
  lead = x.shape[:-1]
  x2 = x.reshape(-1, x.shape[-1]).astype(jnp.float32)
  rows = x2.shape[0]
  amax = jnp.max(jnp.abs(x2), axis=-1, keepdims=True)
  row_scale = jnp.where(amax > 0, amax / 127.0, 1.0)
  high = jnp.clip(jnp.round(x2 / row_scale), -127, 127)
  if activations == "int8x2":
    low = jnp.clip(jnp.round((x2 - high * row_scale) * (LOW_DIGIT / row_scale)), -127, 127)
    both = _int_dot(jnp.concatenate([high, low], axis=0).astype(jnp.int8), arrays["q"])
    acc, low_acc = both[:rows], both[rows:]
  else:
    acc, low_acc = _int_dot(high.astype(jnp.int8), arrays["q"]), None
  if "q_lo" in arrays:
    weight_low = _int_dot(high.astype(jnp.int8), arrays["q_lo"])
    low_acc = weight_low if low_acc is None else low_acc + weight_low
  if low_acc is not None:
    acc = acc + low_acc * (1.0 / LOW_DIGIT)
  y = acc * row_scale * arrays["scale"].astype(jnp.float32)
  return y.reshape(lead + (arrays["q"].shape[0],))


def _matmul_block(x: jax.Array, arrays: dict[str, jax.Array], fmt: str, dtype, activations: str) -> jax.Array:
  if activations in ("int8", "int8x2"):
    return int8_dot(x, arrays, activations).astype(dtype)
  x = x.astype(dtype)
  anchor = _anchor(x, dtype)
  if fmt == "int8":
    # The per-channel scale commutes with the contraction: apply it to the [.., out] result.
    y = dot_nt(x, upcast(arrays["q"], dtype, anchor)) * arrays["scale"]
    return y.astype(dtype)
  return dot_nt(x, dense_weight(arrays, fmt, dtype, anchor)).astype(dtype)


def _embed_rows_block(ids: jax.Array, arrays: dict[str, jax.Array], fmt: str, dtype) -> jax.Array:
  if fmt in ("int8", "int8x2"):
    return dense_weight({k: v[ids] for k, v in arrays.items()}, fmt, dtype)
  if fmt == "int4":
    rows = {k: v[ids.reshape(-1)] for k, v in arrays.items()}
    w = dense_weight(rows, fmt, dtype)
    return w.reshape(ids.shape + (w.shape[-1],))
  raise ValueError(f"unknown quantized format {fmt!r}.")


# ---------------------------------------------------------------------------------------------------------------
# Row blocks. A quantized matrix is stored as a tuple of row blocks (each a dict as above): XLA:CPU runs the
# independent per-block dots concurrently, one per core, where one dot of a small memory-bound matvec runs on one
# core and leaves half the memory bandwidth unused (1.35x faster decode with 2 blocks on 2 cores).


def quantize(w: np.ndarray, fmt: str, group_size: int, blocks: int = 1) -> tuple[dict[str, np.ndarray], ...]:
  """Quantizes a float [out, in] matrix into `blocks` row blocks of `fmt` ('int8', 'int8x2', 'int4') arrays."""
  w = np.asarray(w, np.float32)
  if w.ndim != 2:
    raise ValueError(f"quantize expects a 2-D [out, in] matrix, got shape {w.shape}.")
  return tuple(_quantize_block(part, fmt, group_size) for part in np.array_split(w, blocks, axis=0))


def dequantize(blocks: tuple[dict[str, np.ndarray], ...], fmt: str) -> np.ndarray:
  """Inverse of `quantize` on the host: the float32 [out, in] matrix."""
  return np.concatenate([_dequantize_block(b, fmt) for b in blocks], axis=0)


def matmul(x: jax.Array, blocks, fmt: str, dtype, activations: str = "float") -> jax.Array:
  """x [..., in] @ W^T for a quantized W [out, in] (row blocks), returned in `dtype`.

  activations='float': weight-only; W is dequantized to `dtype` next to its use, accumulation in float32.
  activations='int8' / 'int8x2' (int8 or int8x2 weights only): `int8_dot`.
  """
  if activations in ("int8", "int8x2") and fmt not in ("int8", "int8x2"):
    raise ValueError(f"{activations} activations need int8 or int8x2 weights, got weight format {fmt!r}.")
  parts = [_matmul_block(x, b, fmt, dtype, activations) for b in blocks]
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def embed_rows(ids: jax.Array, blocks, fmt: str, dtype) -> jax.Array:
  """Looks up token rows of a quantized [vocab, d] table stored in row blocks (no block is ever concatenated)."""
  out, start = None, 0
  for b in blocks:
    rows = next(iter(b.values())).shape[0]
    inside = (ids >= start) & (ids < start + rows)
    part = _embed_rows_block(jnp.clip(ids - start, 0, rows - 1), b, fmt, dtype)
    part = jnp.where(inside[..., None], part, 0)
    out = part if out is None else out + part
    start += rows
  return out
