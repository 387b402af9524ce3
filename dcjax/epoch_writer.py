"""Writes a phase's epochs behind the training loop, so the device never waits for a save.

The loop hands every finished epoch (its device arrays: state, snapshot,
losses, divergence masks) to an `EpochWriter` and dispatches the next epoch
at once. One writer thread fetches the epoch to the host and writes it
(records.jsonl, the snapshot, the full state at a resume point), strictly in
epoch order, with the same `PhaseCheckpoints.save` an inline loop calls: what
is on disk after any epoch is what an inline run would have written.

The loop waits only when `depth` epochs are already waiting to be written
(the writer is slower than the device) and at the end of the phase. A crash
loses the epochs still in the queue, none of which is a resume point that was
already sealed: a resumed run restarts from the newest sealed resume point
and drops what came after it (`PhaseCheckpoints.discard_after`), exactly as
after a kill of the inline loop. An error inside the writer (a full disk, a
diverged launch) stops it: later epochs are not written, and the loop raises
that error at its next hand-over, or when it waits for the writer.

`background=False` writes each epoch inline, one epoch behind the dispatch
(the loop before the writer existed); the numbers are the same.
"""
import queue
import threading

_STOP = object()


class EpochWriter:
    """`submit(*job)` calls `write(*job)` in a thread (or inline); `close()` waits for all."""

    def __init__(self, write, depth: int = 2, background: bool = True, name: str = "dcjax-epoch-writer"):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._write = write
        self.background = background
        self.error: BaseException | None = None
        self._pending = None   # inline: the epoch written after the next one is dispatched
        if background:
            self._queue = queue.Queue(maxsize=depth)
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()

    def _work(self):
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                if self.error is None:   # after an error, later epochs are dropped, not written
                    self._write(*job)
            except BaseException as e:   # noqa: BLE001 -- handed to the loop's thread
                self.error = e
            finally:
                self._queue.task_done()

    def _write_pending(self, job=None):
        """Inline: write the epoch held back, and hold `job` back instead."""
        pending, self._pending = self._pending, job
        if pending is not None:
            self._write(*pending)

    def _raise(self):
        if self.error is not None:
            raise self.error

    def submit(self, *job):
        """Hand over one epoch; raises the writer's error, if it has one."""
        if not self.background:
            self._write_pending(job)
            return
        self._raise()
        self._queue.put(job)   # blocks while `depth` epochs are waiting

    def close(self):
        """Write everything handed over, stop the thread; raise the writer's error."""
        if not self.background:
            self._write_pending()
            return
        self._queue.put(_STOP)
        self._thread.join()
        self._raise()

    def abandon(self):
        """After a failure in the loop: drop the epochs not yet started, let
        the one being written finish (never half-written), stop the thread."""
        self._pending = None
        if not self.background:
            return
        while True:
            try:
                self._queue.get_nowait()
                self._queue.task_done()
            except queue.Empty:
                break
        self._queue.put(_STOP)
        self._thread.join()
