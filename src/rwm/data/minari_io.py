"""Conversion to and from Minari, the Farama offline-RL dataset format (PyPI ``minari``).

Mapping of one rwm episode of T+1 records (the last has a zero action) to a Minari episode of
T steps:

    observations  (T+1, 45)  system_state: the world model's state, the quantity these data are for.
                             (The policy's 48-dim input depends on commands and observation noise;
                             it travels in infos.)
    actions       (T, 12)    the action taken from observation t
    rewards       (T,)       recorded rewards, zeros when the dataset has none
    terminations  (T,)       last step only: the episode ended in a fall (terminal system_termination 1)
    truncations   (T,)       last step only: it ended otherwise (time limit, or end of the recording)
    infos         per observation (T+1, ...): system_contact, system_termination, terminal_record
                  (1 on the last record if the episode ended in the simulator), and when present
                  policy_observation and command

Episodes of a single record hold no step and are skipped. The rwm metadata (source policy,
normaliser, ...) is kept as JSON under the Minari metadata key ``rwm_metadata``.

Minari writes to its datasets directory: ``--out-dir``, else MINARI_DATASETS_PATH, else
~/.minari/datasets. The dataset is built in a hidden temporary directory there and renamed
into place when complete, so an interruption leaves no half-written dataset under its id.
Nothing here touches the network: import reads local datasets only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rwm.data.format import DatasetError
from rwm.data.reader import DatasetReader
from rwm.data.writer import DatasetWriter

INFO_COLUMNS = ("system_contact", "system_termination", "policy_observation", "command")


def _import_minari():
    try:
        import minari
    except ImportError:
        raise DatasetError("Minari conversion needs the 'minari' package "
                           "(pip install 'minari>=0.5,<0.6' h5py).") from None
    return minari


@contextlib.contextmanager
def datasets_path(directory: str | os.PathLike | None) -> Iterator[Path]:
    """Point Minari at `directory` (None: leave its setting) for the duration; yields the root in use."""
    if directory is None:
        from minari.storage.datasets_root_dir import get_dataset_path

        yield Path(get_dataset_path())
        return
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(directory)
    try:
        Path(directory).mkdir(parents=True, exist_ok=True)
        yield Path(directory)
    finally:
        if previous is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def export_minari(path: str | os.PathLike, dataset_id: str, *, out_dir: str | os.PathLike | None = None,
                  episodes_per_batch: int = 256) -> dict[str, Any]:
    """Write dataset file `path` as the Minari dataset `dataset_id`; returns a summary."""
    minari = _import_minari()
    import gymnasium as gym
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id

    namespace = parse_dataset_id(dataset_id)[0]  # ValueError on a malformed id
    with DatasetReader(path) as reader, datasets_path(out_dir) as root:
        final = root / dataset_id
        if final.exists():
            raise DatasetError(f"a Minari dataset '{dataset_id}' already exists in '{root}'; choose another id.")
        tmp_root = Path(tempfile.mkdtemp(dir=root, prefix=".rwm-export-"))
        try:
            with datasets_path(tmp_root), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Minari warns about every optional field left empty
                box = lambda n: gym.spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32)
                dataset = minari.create_dataset_from_buffers(
                    dataset_id, [], observation_space=box(45), action_space=box(12),
                    algorithm_name=_policy_name(reader),
                    author="rwm", description="ANYmal-D transitions recorded by rwm: observations are the 45-dim "
                                              "system_state, actions the 12-dim policy actions taken from them.",
                    data_format="hdf5")
                batch, exported, skipped, steps = [], 0, 0, 0
                for episode in reader.iter_episodes():
                    if len(episode["system_state"]) < 2:
                        skipped += 1
                        continue
                    batch.append(_to_buffer(EpisodeBuffer, episode))
                    steps += len(episode["system_state"]) - 1
                    if len(batch) >= episodes_per_batch:
                        dataset.storage.update_episodes(batch)
                        exported += len(batch)
                        batch = []
                if batch:
                    dataset.storage.update_episodes(batch)
                    exported += len(batch)
                dataset.storage.update_metadata({"rwm_metadata": json.dumps(reader.metadata)})
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp_root / dataset_id, final)
        finally:
            shutil.rmtree(tmp_root, ignore_errors=True)
        if namespace is not None:
            from minari.namespace import create_namespace, list_local_namespaces

            if namespace not in list_local_namespaces():
                with contextlib.suppress(ValueError):
                    create_namespace(namespace)
    return {"dataset_id": dataset_id, "path": str(final), "episodes": exported, "steps": steps,
            "skipped_single_record_episodes": skipped}


def _policy_name(reader: DatasetReader) -> str:
    source = reader.metadata.get("source") or {}
    return str(source.get("kind", "unknown")) + (f": {source['checkpoint']}" if source.get("checkpoint") else "")


def _to_buffer(EpisodeBuffer, episode: dict):
    states = episode["system_state"]  # (T+1, 45)
    steps = len(states) - 1
    fell = bool(episode["ended"]) and bool(episode["system_termination"][-1, 0] > 0.5)
    terminations = np.zeros(steps, dtype=bool)
    truncations = np.zeros(steps, dtype=bool)
    terminations[-1] = fell
    truncations[-1] = not fell
    rewards = episode["reward"][:-1] if "reward" in episode else np.zeros(steps, dtype=np.float32)
    terminal_record = np.zeros(steps + 1, dtype=bool)
    terminal_record[-1] = bool(episode["ended"])
    infos = {name: episode[name] for name in INFO_COLUMNS if name in episode}
    infos["terminal_record"] = terminal_record
    return EpisodeBuffer(observations=states, actions=episode["system_action"][:-1], rewards=rewards,
                         terminations=terminations, truncations=truncations, infos=infos)


def _load(name_or_path: str, datasets_dir: str | os.PathLike | None):
    minari = _import_minari()
    path = Path(name_or_path)
    if path.exists():
        data = path / "data" if (path / "data").is_dir() else path
        if not (data / "metadata.json").is_file():
            raise DatasetError(f"'{path}' is not a Minari dataset directory (no metadata.json in it or in data/).")
        return minari.MinariDataset(data)
    with datasets_path(datasets_dir) as root:
        try:
            return minari.load_dataset(name_or_path, download=False)
        except FileNotFoundError:
            raise FileNotFoundError(f"no Minari dataset '{name_or_path}' in '{root}' (and no such path); datasets "
                                    "are read locally only, never downloaded.") from None


def import_minari(name_or_path: str, out: str | os.PathLike, *, overwrite: bool = False,
                  datasets_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Convert a local Minari dataset (id or directory) into the dataset file `out`; returns a summary."""
    import gymnasium as gym

    dataset = _load(str(name_or_path), datasets_dir)
    obs_space, act_space = dataset.observation_space, dataset.action_space
    where = f"Minari dataset '{dataset.id}'"
    key = None
    if isinstance(obs_space, gym.spaces.Dict):
        if "system_state" not in obs_space.spaces:
            raise DatasetError(f"{where} has dict observations without a 'system_state' entry "
                               f"(keys {sorted(obs_space.spaces)}).")
        key, obs_space = "system_state", obs_space.spaces["system_state"]
    if getattr(obs_space, "shape", None) != (45,):
        raise DatasetError(f"{where} has observations of shape {getattr(obs_space, 'shape', None)}; expected the "
                           "45-dim system_state.")
    if getattr(act_space, "shape", None) != (12,):
        raise DatasetError(f"{where} has actions of shape {getattr(act_space, 'shape', None)}; expected (12,).")
    raw = dataset.storage.metadata.get("rwm_metadata")
    original = json.loads(raw) if isinstance(raw, str) else (raw or {})
    first = next(iter(dataset.iterate_episodes()), None)
    if first is None:
        raise DatasetError(f"{where} holds no episode.")
    infos = first.infos or {}
    columns = tuple(c for c in ("policy_observation", "command") if c in infos) + ("reward",)
    source = {"kind": "minari", "dataset_id": dataset.id, "original_source": original.get("source"),
              "contacts": "from infos" if "system_contact" in infos else "absent (zeros)"}
    extra = {k: v for k, v in original.items() if k in ("task", "num_envs", "seed", "observation_noise")}
    with DatasetWriter(out, source=source, columns=columns, overwrite=overwrite, metadata=extra,
                       step_dt=original.get("step_dt", 0.02), robot=original.get("robot", "anymal_d")) as writer:
        for episode in dataset.iterate_episodes():
            writer.append_episode(**_from_episode(episode, key, columns, where))
        summary = {"path": str(out), "dataset_id": dataset.id, "num_episodes": writer.num_episodes,
                   "num_records": writer.num_records}
    return summary


def _from_episode(episode, key: str | None, columns: tuple[str, ...], where: str) -> dict[str, Any]:
    states = np.asarray(episode.observations[key] if key else episode.observations, dtype=np.float32)
    steps = len(episode.actions)
    if states.shape[0] != steps + 1:
        raise DatasetError(f"{where} episode {episode.id} has {states.shape[0]} observations for {steps} actions; "
                           "expected one more observation than actions.")
    infos = episode.infos or {}
    action = np.zeros((steps + 1, 12), dtype=np.float32)
    action[:steps] = episode.actions
    terminated = bool(episode.terminations[-1]) if steps else False
    truncated = bool(episode.truncations[-1]) if steps else False
    if "system_termination" in infos:
        termination = np.asarray(infos["system_termination"], dtype=np.float32).reshape(steps + 1, 1)
    else:
        termination = np.zeros((steps + 1, 1), dtype=np.float32)
        termination[-1] = float(terminated)
    contact = (np.asarray(infos["system_contact"], dtype=np.float32) if "system_contact" in infos
               else np.zeros((steps + 1, 8), dtype=np.float32))
    ended = bool(np.asarray(infos["terminal_record"])[-1]) if "terminal_record" in infos else terminated or truncated
    reward = np.zeros(steps + 1, dtype=np.float32)
    reward[:steps] = episode.rewards
    out = {"system_state": states, "system_action": action, "system_contact": contact,
           "system_termination": termination, "reward": reward, "ended": ended}
    for name in columns:
        if name in ("policy_observation", "command"):
            out[name] = infos.get(name)
    return out
