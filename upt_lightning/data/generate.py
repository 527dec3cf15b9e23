"""Generate the built-in data sets into HDF5 files.

    python -m upt_lightning.data.generate burgers2d --out data --num 256
    generate_dataset("burgers2d", "data/burgers2d_64.h5", num=256)

``burgers1d`` is PDEBench's 1D Burgers set-up (layout ``tensor``/``x-coordinate``/``t-coordinate``);
``burgers2d`` the 2D viscous Burgers equations on a grid (PDEBench per-sample groups), optionally
written on a finer grid than the solver's; ``burgers2d_mesh`` the same trajectories at scattered
points, a different set per trajectory. The same seed gives the same initial conditions in both 2D
Burgers sets. ``ns2d`` is 2D incompressible Navier-Stokes in vorticity form in the FNO paper's setting
(viscosity 1e-3, forcing 0.1 (sin 2 pi (x + y) + cos 2 pi (x + y))), channel ``w``, per-sample groups.
Layouts and defaults: docs/data.md.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType

import h5py
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from upt_lightning.data.readers import open_source
from upt_lightning.data.recipes import DATASETS, GENERATOR, NOT_IN_FILENAME, Advance, DatasetRecipe, recorded_settings
from upt_lightning.data.solvers.spectral import dealias_cutoff

OPTIONS: Mapping[str, tuple[type, str]] = MappingProxyType({
    "resolution": (int, "solver grid points per axis"),
    "output_resolution": (int, "grid points per axis written (burgers2d, ns2d); a multiple of resolution"),
    "num_steps": (int, "snapshots per trajectory, including t = 0"),
    "dt_out": (float, "time between snapshots"),
    "nu": (float, "viscosity (burgers1d: PDEBench's Nu; its equation has nu/pi)"),
    "amplitude": (float, "peak of |u| and |v| in each initial condition (2D)"),
    "num_modes": (int, "sinusoids per initial condition (burgers1d)"),
    "max_wavenumber": (int, "highest wavenumber in the initial conditions"),
    "min_points": (int, "fewest mesh points per trajectory"),
    "max_points": (int, "most mesh points per trajectory"),
    "cfl": (float, "Courant number of the internal time step"),
    "substeps": (int, "internal time steps per snapshot interval (ns2d: a fixed step)"),
    "batch_size": (int, "trajectories solved together (memory vs speed)"),
})


def _recipe(name: str) -> DatasetRecipe:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def _coerce(key: str, value) -> int | float:
    kind = OPTIONS[key][0]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
        raise ValueError(f"option {key} must be {'an integer' if kind is int else 'a number'}, got {value!r}")
    if not value > 0:
        raise ValueError(f"option {key} must be positive, got {value!r}")
    return kind(value)


def resolve_options(name: str, **options) -> dict:
    """All options of data set ``name``: the defaults updated by ``options`` (``None`` = default),
    checked. Raises ``ValueError`` naming the valid options or the violated constraint."""
    defaults = _recipe(name).defaults
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for {name}; valid options: {', '.join(defaults)}")
    merged = {**defaults, **{k: v for k, v in options.items() if v is not None}}
    if "output_resolution" in merged and merged["output_resolution"] is None:
        merged["output_resolution"] = merged["resolution"]
    resolved = {key: _coerce(key, value) for key, value in merged.items()}
    if dealias_cutoff(resolved["resolution"]) < resolved["max_wavenumber"]:
        raise ValueError(
            f"resolution {resolved['resolution']} cannot resolve initial wavenumbers up to "
            f"{resolved['max_wavenumber']}: use resolution >= {3 * resolved['max_wavenumber'] + 1}"
        )
    if resolved.get("output_resolution", resolved["resolution"]) % resolved["resolution"]:
        raise ValueError(
            f"output_resolution {resolved['output_resolution']} must be a multiple of resolution "
            f"{resolved['resolution']} (the solver grid)"
        )
    if resolved.get("min_points", 0) > resolved.get("max_points", 0):
        raise ValueError(f"min_points {resolved['min_points']} exceeds max_points {resolved['max_points']}")
    return resolved


def default_filename(name: str, **options) -> str:
    """File name that tells the data sets apart, e.g. ``burgers2d_64.h5`` or ``burgers2d_128.h5``.

    The written grid size follows the name; options that differ from their defaults follow as
    ``_<option><value>`` (``burgers2d_64_nu0.02.h5``). ``num`` and ``seed`` are not part of it.
    """
    recipe = _recipe(name)
    resolved = resolve_options(name, **options)
    parts = [name] if recipe.grid_option is None else [f"{name}_{resolved[recipe.grid_option]}"]
    for key, value in resolved.items():
        if key not in NOT_IN_FILENAME and key != recipe.grid_option and value != recipe.defaults[key]:
            parts.append(f"{key}{value:g}")
    return "_".join(parts) + ".h5"


@contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Advance]:
    if not enabled:
        yield lambda count: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns) as bar:
        task = bar.add_task(description, total=total)
        yield lambda count: bar.advance(task, count)


def generate_dataset(
    name: str, out: str | os.PathLike, *, num: int | None = None, seed: int = 0, progress: bool = True,
    trajectories: Sequence[int] | None = None, **options,
) -> Path:
    """Write ``num`` trajectories of data set ``name`` (see ``DATASETS``) to the HDF5 file ``out``.

    ``num=None`` takes the data set's default; ``seed`` fixes all random draws; ``options``
    override the defaults in ``DATASETS[name].defaults``. ``trajectories`` (grid sets) writes only
    those ids of the ``num``, sorted, with the values they have in the whole set, and records them
    in the root attribute ``trajectory_ids`` (a finer-grid copy of a test split, for example).
    The file appears only when complete. Returns the path. Bad names or options raise
    ``ValueError`` before any work.
    """
    recipe = _recipe(name)
    resolved = resolve_options(name, **options)
    num = recipe.default_num if num is None else num
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num (trajectories) must be a positive integer, got {num!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    ids = _check_subset(name, recipe, num, trajectories)
    path = Path(out)
    if path.is_dir():
        example = path / default_filename(name, **options)
        raise ValueError(f"out {path} is a folder; give the file path, e.g. {example}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _progress(progress, num if ids is None else len(ids), f"{name} -> {path.name}") as advance:
        recipe.write(path, num, seed, resolved, advance, ids)
    return path


def _check_subset(name: str, recipe: DatasetRecipe, num: int, trajectories: Sequence[int] | None) -> list[int] | None:
    if trajectories is None:
        return None
    if not recipe.subsets:
        raise ValueError(f"{name} cannot be written for some trajectories only (trajectories=); write the whole set")
    ids = sorted({int(t) for t in trajectories})
    if not ids or ids[0] < 0 or ids[-1] >= num:
        raise ValueError(f"trajectories must be ids in [0, {num}) (num={num}), got {list(trajectories)[:8]}")
    return ids


def stale_settings(
    path: str | os.PathLike, name: str, *, num: int | None = None, seed: int = 0, progress: bool = True, **options,
) -> dict[str, tuple]:
    """``{setting: (value in the file, value requested)}`` for each setting in which the file at ``path``
    differs from what ``generate_dataset(name, path, num=num, seed=seed, **options)`` would write.

    Compares the data set, seed, trajectory count and every option (defaults filled in) except those in
    ``NOT_IN_FILENAME``; numbers within a relative 1e-6. Empty for a file our generator did not write (a
    user's own file is theirs to name) and for settings a file predates (``num`` is then counted). Bad
    names or options raise ``ValueError`` as in ``generate_dataset``; ``progress`` is accepted (and
    ignored) so that the keyword arguments of a generation can be passed as they are.
    """
    with h5py.File(path, "r") as file:
        attrs = dict(file.attrs)
    if attrs.get("generator") != GENERATOR:
        return {}
    requested = {"dataset": name, "seed": seed, "num": _recipe(name).default_num if num is None else num,
                 **{k: v for k, v in resolve_options(name, **options).items() if k not in NOT_IN_FILENAME}}
    recorded = recorded_settings(attrs)
    if "num" not in recorded and "trajectory_ids" not in attrs:
        with open_source(path) as source:  # written before num was recorded: it holds the whole set
            recorded["num"] = source.num_trajectories
    return {key: (recorded[key], value) for key, value in requested.items()
            if key in recorded and not _same(recorded[key], value)}


def _same(a, b) -> bool:
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return math.isclose(a, b, rel_tol=1e-6) if numbers else a == b


def describe_differences(differences: Mapping[str, tuple]) -> str:
    """``stale_settings``' result in words: ``num_steps 5 in the file, 8 requested; ...``."""
    return "; ".join(f"{key} {old!r} in the file, {new!r} requested" for key, (old, new) in differences.items())


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m upt_lightning.data.generate NAME --out DIR [options]``."""
    epilog = "\n".join(
        f"{name}: {recipe.description}; {recipe.equation}; {recipe.default_num} trajectories; "
        + ", ".join(f"{k}={v}" for k, v in recipe.defaults.items())
        for name, recipe in DATASETS.items()
    )
    parser = argparse.ArgumentParser(
        prog="python -m upt_lightning.data.generate", epilog=epilog,
        description="Generate a built-in data set into DIR/<default file name>.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=list(DATASETS), help="data set")
    parser.add_argument("--out", required=True, help="folder to write into")
    parser.add_argument("--num", type=int, help="number of trajectories (default: per data set)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    for key, (kind, text) in OPTIONS.items():
        parser.add_argument(f"--{key.replace('_', '-')}", type=kind, help=text)
    args = parser.parse_args(argv)
    options = {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}
    start = time.perf_counter()
    try:
        path = Path(args.out) / default_filename(args.name, **options)
        generate_dataset(args.name, path, num=args.num, seed=args.seed, progress=not args.no_progress, **options)
    except ValueError as exc:
        parser.error(str(exc))
    except FloatingPointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    size_mb = path.stat().st_size / 2**20
    print(f"wrote {path} ({size_mb:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
