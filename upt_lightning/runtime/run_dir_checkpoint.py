"""A ModelCheckpoint that follows its run dir when the run dir is moved or copied.

Lightning's ``ModelCheckpoint`` stores absolute paths in every checkpoint it writes (the best file, the
best-k files, the last file) together with its ``dirpath``. When a resumed run finds another ``dirpath``
than the stored one, Lightning 2.6 drops the best-k bookkeeping but keeps the stored ``best_model_path``:
after ``mv run_a run_b`` and a rerun, the best file is looked for in ``run_a`` (gone), so the run's final
weights were evaluated in place of its best checkpoint; after ``cp -a`` the copy evaluated (and could have
rotated) files of the original. Here, when the current ``dirpath`` holds the stored files, the stored paths
are moved onto it, so a relocated run dir resumes exactly as it would have in place and never reads or
writes the original. A stored path outside the stored ``dirpath`` (none that this callback wrote) is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint

PATH_KEYS = ("best_model_path", "kth_best_model_path", "last_model_path")


def rebase(path: str, old_dir: str, new_dir: str) -> str:
    """``path`` under ``old_dir`` as the same path under ``new_dir``; "" for a path elsewhere (or empty)."""
    if not path:
        return path
    try:
        return str(Path(new_dir) / Path(path).relative_to(old_dir))
    except ValueError:
        return ""


def relocated_state(state: dict[str, Any], new_dir: str) -> dict[str, Any]:
    """A ModelCheckpoint ``state_dict()`` written in its stored ``dirpath``, as if written in ``new_dir``.

    Only when ``new_dir`` holds the files the state names (the run dir was moved or copied): a run that
    continues another run's checkpoint in a new directory (``resume=PATH``, the CLI's new version dir)
    keeps Lightning's own handling, which starts the best-k bookkeeping afresh there.
    """
    old_dir = state.get("dirpath")
    if old_dir is None or old_dir == new_dir:
        return state
    moved = {**state, "dirpath": new_dir}
    for key in PATH_KEYS:
        if key in state:
            moved[key] = rebase(state[key], old_dir, new_dir)
    if not any(moved.get(key) and Path(moved[key]).is_file() for key in PATH_KEYS):
        return state
    if "best_k_models" in state:
        pairs = ((rebase(path, old_dir, new_dir), score) for path, score in state["best_k_models"].items())
        moved["best_k_models"] = {path: score for path, score in pairs if path}
    return moved


class RunDirCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose restored paths follow its ``dirpath`` (see the module docstring).

    Its ``state_key`` is ModelCheckpoint's: checkpoints written with either class resume into the other.
    """

    @property
    def state_key(self) -> str:
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.dirpath is not None:
            state_dict = relocated_state(state_dict, self.dirpath)
        super().load_state_dict(state_dict)
