"""Atomic, rotating checkpoints of the training state and the data iterator's position (orbax).

Orbax writes each step into a temporary directory and renames it when complete (`commit_success.txt`), so a
run killed mid-save leaves the previous checkpoint intact; `CheckpointManager` keeps the last K. The data
iterator's position is saved beside the state so that a resumed run sees exactly the batches an
uninterrupted run would have seen: this is what makes resume bit-identical.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def _encode_data_state(data_state: Any) -> Any:
  # grain's DataLoader iterators describe their position as bytes; JSON needs text.
  if isinstance(data_state, bytes):
    return {"__bytes__": base64.b64encode(data_state).decode("ascii")}
  return data_state


def _decode_data_state(data_state: Any) -> Any:
  if isinstance(data_state, dict) and set(data_state) == {"__bytes__"}:
    return base64.b64decode(data_state["__bytes__"])
  return data_state


def _leaf_shapes(tree: Any) -> dict[tuple[str, ...], tuple[int, ...] | None]:
  """{path as key names: shape} of a state, an abstract state or orbax's stored metadata (whose paths name the
  same dict keys, attributes and list positions)."""
  def key_name(entry) -> str:
    for attribute in ("key", "name", "idx"):
      if hasattr(entry, attribute):
        return str(getattr(entry, attribute))
    return str(entry)

  def shape(leaf) -> tuple[int, ...] | None:
    dtype = getattr(leaf, "dtype", None)
    if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
      return None  # a typed PRNG key is stored as its key data, with an extra trailing axis
    return tuple(leaf.shape) if hasattr(leaf, "shape") else None

  return {tuple(key_name(entry) for entry in path): shape(leaf)
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class CheckpointMismatchError(ValueError):
  """A checkpoint's arrays do not match the state a run would restore them into."""
  names_its_fix = True  # an entrypoint prints it as one line (core.entrypoint.run)


class Checkpointer:
  """Saves every `every` steps (and when forced), keeps the newest `keep`, restores the latest."""

  def __init__(self, directory: str, *, every: int, keep: int):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        # handlers named up front so that a step's stored shapes can be read before restoring (`_mismatch`)
        item_handlers={"state": ocp.StandardCheckpointHandler(), "data": ocp.JsonCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=every,
                                             enable_async_checkpointing=False, create=True),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: Any = None, *, force: bool = False) -> bool:
    if step in self._manager.all_steps():
      return False
    saved = self._manager.save(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                data=ocp.args.JsonSave({"position": _encode_data_state(data_state)})),
        force=force,
    )
    self._manager.wait_until_finished()
    return saved

  def restore(self, step: int, like_state: Any) -> tuple[Any, Any]:
    """Restores into the structure, dtypes and shardings of `like_state` (a freshly initialised state)."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    # Compared before restoring: a restore that fails inside orbax leaves its array reads running in the
    # background, which then report errors of their own after the run has stopped.
    problem = self._mismatch(step, abstract)
    if problem is not None:
      raise self._mismatch_error(step, problem)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), data=ocp.args.JsonRestore()))
    except (ValueError, KeyError, TypeError) as e:
      # orbax's own message suggests `strict=False`, which would pad or cut the stored weights to fit. The shapes
      # were checked above, so a failure here can also be a damaged step folder.
      raise CheckpointMismatchError(
          f"the checkpoint at step {step} in {self.directory} could not be restored into this run's state "
          f"({type(e).__name__}: {str(e)[:300]}): another config wrote it, or its files are damaged. Fix: use a new "
          f"--workdir for a new config, rerun with the config that wrote it, or delete {self.directory}/{step} to "
          f"resume from the step before it.") from None
    return restored.state, _decode_data_state(restored.data["position"])

  def _mismatch_error(self, step: int, detail: str) -> CheckpointMismatchError:
    return CheckpointMismatchError(
        f"the checkpoint at step {step} in {self.directory} does not fit this run's model or optimizer (another "
        f"config trained it: {detail}). Fix: use a new --workdir for the new config, or rerun with the config that "
        f"wrote it.")

  def _mismatch(self, step: int, abstract: Any) -> str | None:
    """The first leaf whose stored shape differs from `abstract`'s, or that only one side has; None if all fit
    (dtypes may differ: orbax casts on restore) or if the stored shapes cannot be read (restore then decides)."""
    try:
      stored = _leaf_shapes(self._manager.item_metadata(step)["state"])
    except Exception:  # noqa: BLE001  older layouts or orbax versions: leave the check to the restore itself
      return None
    wanted = _leaf_shapes(abstract)
    for path in sorted(set(stored) | set(wanted)):
      name = "/".join(path)
      if path not in stored:
        return f"{name} is not in the checkpoint"
      if path not in wanted:
        return f"{name} is in the checkpoint but not in this run's state"
      if None not in (stored[path], wanted[path]) and stored[path] != wanted[path]:
        return f"{name} is stored with shape {stored[path]}, this run's has shape {wanted[path]}"
    return None

  def close(self) -> None:
    self._manager.close()
