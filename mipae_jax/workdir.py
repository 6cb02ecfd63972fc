"""The workdir a run writes into: the checks every mode makes of it, and the
lock that lets one training process at a time write there."""

import fcntl
import os
import socket

from mipae_jax import config_validation


def check_writable(workdir: str) -> None:
  """Creates `workdir` if needed and checks that a file can be written there."""
  if (e := config_validation.unwritable(workdir)) is not None:
    raise PermissionError(
      f"Cannot write to the workdir {workdir} ({e.strerror}); use a writable --workdir."
    ) from e


def check_workdir(workdir: str) -> None:
  """The check every mode makes of --workdir before it starts: a path that
  exists must be a directory this process can write to (a missing one is
  made later, by the mode that writes into it)."""
  if not os.path.exists(workdir):
    return
  if not os.path.isdir(workdir):
    raise PermissionError(
      f"The workdir {workdir} is not a directory (a file is there); use another "
      "--workdir."
    )
  check_writable(workdir)


LOCK_FILE = ".writer.lock"


class WorkdirInUseError(PermissionError):
  """Another training process writes into this workdir."""


class WorkdirLock:
  """An exclusive lock on WORKDIR/.writer.lock, held by the one process that
  trains into the workdir: the file names its host and pid while it is held
  and is removed on release. The kernel releases the lock on every exit
  (kill -9 included), so a lock left behind is never stale."""

  def __init__(self, workdir: str):
    self.path = os.path.join(workdir, LOCK_FILE)
    while True:
      self._file = open(self.path, "a+")  # noqa: SIM115 (held until release)
      try:
        fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        self._file.seek(0)
        holder = self._file.read().strip() or "a process starting up"
        self._file.close()
        raise WorkdirInUseError(
          f"The workdir {workdir} is in use by another training process "
          f"({holder}); wait for it to end or use another --workdir."
        ) from None
      try:  # The holder before us may have removed the file we locked.
        if os.stat(self.path).st_ino == os.fstat(self._file.fileno()).st_ino:
          break
      except FileNotFoundError:
        pass
      self._file.close()
    self._file.seek(0)
    self._file.truncate()
    self._file.write(f"host {socket.gethostname()}, pid {os.getpid()}\n")
    self._file.flush()

  def release(self) -> None:
    if not self._file.closed:
      os.remove(self.path)
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()


def missing_dirs(path: str) -> list[str]:
  """`path` and its ancestors that do not exist yet, deepest first."""
  missing = []
  while path and not os.path.exists(path):
    missing.append(path)
    parent = os.path.dirname(path)
    path = "" if parent == path else parent
  return missing


def remove_if_empty(paths: list[str]) -> None:
  """Removes the directories `paths` (deepest first) while they are empty."""
  for path in paths:
    try:
      os.rmdir(path)
    except OSError:  # Not empty (or already gone): keep it and its parents.
      return
