"""Running one job inside the worker process: generate, report, save, and turn errors into events.

worker.py owns the process and the pipes; this module owns what happens to a single
GenerateRequest. It imports torch, so worker.py imports it only inside its entry function.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import platform
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from inference import acceleration, describe, images, merge, networks, plot_runner, previews, sd_upscale, upscale, vae, workflows
from inference.faces import restore as face_restore
from inference.masks_from_words import Segments, segment_infotext
from inference.common import infotext
from inference.generate import (
    InvalidRequestError,
    IsCancelled,
    JobCancelledError,
    OnStep,
    generate,
)
from inference.load_progress import LoadListener
from inference.progress import ProgressReporter, Send
from inference.models import (
    PipelineCache,
    UnknownModelError,
    dtype_name,
    free_accelerator_memory,
    model_file_hash,
    resolve_device,
    resolve_dtype,
)
from inference.common.protocol import (
    GenerateRequest,
    ImageResult,
    JobCompleted,
    JobKind,
    JobFailed,
    JobSaving,
    JobStarted,
    ModelLoading,
    ModelSpec,
    WorkerConfig,
    WorkerReady,
)
from inference.safety_checker import SafetyChecker, load_safety_checker
from inference.common.file_hashes import MODEL_HASH_LENGTH
from inference.common.sources import SINGLE_FILE_SUFFIXES, check_worker_config

log = logging.getLogger(__name__)

# Discord shows messages of up to 2000 characters; a failure message is one line of a reply.
MAX_FAILURE_MESSAGE = 300
class Saver:
    """Where a job's saving (its PNGs, then its final event) runs once its images are made.

    Inline by default: ``submit`` returns when the job has sent JobCompleted. With
    ``background`` (the worker's loop) it runs on a thread, after a JobSaving that frees the
    bot to send the next job, whose GPU work then overlaps these PNGs' compression
    (bench.worker_stream measures both ways). One pass saves at a time: a job alone
    waits for the saves before it (memory stays bounded); a batch's jobs wait once, in
    run_batch, then save side by side. An error of ``send`` itself (the bot is gone) comes
    out of the next ``wait``.
    """

    def __init__(self, background: bool = False, threads: int = 4):
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="saver") if background else None
        self._saving: list[Future[None]] = []

    def submit(self, job_id: int, save: Callable[[], None], send: Send, after_earlier: bool = True) -> None:
        if self._executor is None:
            save()
            return
        if after_earlier:
            self.wait()
        send(JobSaving(job_id))
        self._saving.append(self._executor.submit(save))

    def wait(self) -> None:
        """Return once every job handed over has sent its final event."""
        saving, self._saving = self._saving, []
        futures.wait(saving)
        for future in saving:
            future.result()  # the first error, once all have ended

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)


class JobRunner:
    """The worker's state once started: the loaded models, and how to run a job with them."""

    def __init__(
        self,
        config: WorkerConfig,
        cache: PipelineCache,
        upscalers: upscale.Upscalers,
        extra_networks: networks.ExtraNetworks | None = None,
        safety_checker: SafetyChecker | None = None,
        saver: Saver | None = None,
    ):
        self.config = config
        self.saver = saver or Saver()
        self.cache = cache
        self.upscalers = upscalers
        self.face_restorers = face_restore.FaceRestorers(config.face_restorer_dirs, cache.device, cache.dtype)
        self.safety_checker = safety_checker
        self.networks = extra_networks or networks.ExtraNetworks(config.embedding_dirs, config.lora_dirs)
        self.vaes = vae.VaeFiles(config.vae_dirs, [spec.source for spec in config.models])
        self.describers = describe.Describers(config.describe, cache.device, cache.dtype)
        self.segments = Segments(config.segmentation_model, config.outputs_dir, cache.device, cache.dtype)
        # A checkpoint's hash when the bot did not send it (ModelSpec.sha256): computed on a
        # thread of its own from the moment a job of the model starts, so that reading a
        # multi-GB file overlaps the job's denoising instead of adding to its saving.
        self._model_hashes: dict[str, Future[str | None]] = {}
        taesd = taesd_xl = None
        if config.preview_method == previews.TAESD:
            taesd = previews.load_taesd(config.taesd_source, cache.device, cache.dtype)
            if config.taesdxl_source:
                taesd_xl = previews.load_taesd(config.taesdxl_source, cache.device, cache.dtype)
        self.previewer = previews.Previewer(
            config.preview_method, config.preview_max_side, taesd, family=lambda: cache.latent_family,
            taesd_xl=taesd_xl,
        )
        # Start-up seconds for WorkerReady.timings (acceleration.warm_up_models).
        self.startup_timings: dict[str, float] = {}

    @classmethod
    def start(cls, config: WorkerConfig, saver: Saver | None = None) -> JobRunner:
        """Check the config and the model sources, pick the device, preload models.

        Raises an exception whose message says what to fix; the worker sends it to the bot as
        WorkerStartupFailed.
        """
        _quiet_library_progress_bars()
        check_worker_config(config)
        device = resolve_device(config.device)
        dtype = resolve_dtype(config.dtype, device)
        Path(config.outputs_dir).mkdir(parents=True, exist_ok=True)
        # Before the models: a wrong checker path fails start-up in seconds, not minutes.
        checker = load_safety_checker(config.safety_checker, device, dtype) if config.safety_checker else None
        preload = tuple(dict.fromkeys(config.preload or (config.default_model,)))
        plan = acceleration.Acceleration.for_device(config, device)  # a bad value fails here
        # Keep every preloaded model resident: preloading one only to evict it makes no sense.
        cache = PipelineCache(
            config.models, device, dtype, max_loaded=len(preload),
            memory_budget_mb=config.model_memory_budget_mb, acceleration=plan,
        )
        for name in preload:
            cache.get(name)
        timings = acceleration.warm_up_models(cache, preload, plan, config.warmup_shape, config.max_batch_images)
        upscalers = upscale.Upscalers(
            config.upscaler_dirs, device, dtype, config.upscale_tile, config.upscale_tile_overlap
        )
        runner = cls(config, cache, upscalers, safety_checker=checker, saver=saver)
        runner.startup_timings = timings
        return runner

    def ready_event(self) -> WorkerReady:
        import diffusers
        import transformers

        return WorkerReady(
            device=str(self.cache.device),
            dtype=dtype_name(self.cache.dtype),
            models=tuple(spec.name for spec in self.config.models),
            versions={
                "python": platform.python_version(),
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "transformers": transformers.__version__,
            },
            timings=dict(self.startup_timings),
        )

    def run(
        self,
        request: GenerateRequest,
        is_cancelled: IsCancelled,
        send: Send,
        made: list | None = None,
        batch_seconds: float = 0.0,
    ) -> None:
        """Run one job and send its events; JobCancelledError is left to the caller.

        Every other failure becomes JobFailed, so one bad job never stops the worker. ``made``:
        the job's images from a batch pass (inference.batching), which announced the job and
        took ``batch_seconds`` for its share; they are only saved and reported here. The
        images are checked here (the safety classifier uses the device) and saved through
        ``self.saver``: with a background saver, this returns while they are written.
        """
        if request.kind == JobKind.DESCRIBE:
            self._describe(request, is_cancelled, send)
            return
        if self.config.model_memory_budget_mb == 0:
            self.describers.release()  # one model at a time: the pipeline's turn
        from_pass = made is not None
        if not from_pass:
            send(JobStarted(request.job_id))
            if request.kind == JobKind.MERGE:
                self._run_merge(request, is_cancelled, send)
                return
            self.start_model_hashes(request)
        started = time.monotonic()
        try:
            reporter = ProgressReporter(
                request.job_id, send, self.config.preview_interval_s, self.config.preview_max_side,
                self.previewer,
            )
            if made is None:
                with self.cache.reporting_loads(loading_events((request.job_id,), send)):
                    made = self._make(request, reporter, is_cancelled)
            made, notes = self._restore_faces(request, made, reporter, is_cancelled)
            flags = self._safety_flags(request, made)
            if request.kind == JobKind.SD_UPSCALE:  # its infotext says the tiles' size
                request = sd_upscale.infotext_request(self.cache, request)
        except JobCancelledError:
            raise
        except Exception as exc:
            _report_failure(request, exc, send)
            return
        seconds = batch_seconds + time.monotonic() - started
        save = functools.partial(self._save_and_report, request, made, flags, seconds, send, notes)
        # A batch's jobs (made by the pass) waited once for the pass before, in run_batch.
        self.saver.submit(request.job_id, save, send, after_earlier=not from_pass)

    def _run_merge(self, request: GenerateRequest, is_cancelled: IsCancelled, send: Send) -> None:
        """A checkpoint merge (inference.merge): its progress is tensors written; it completes
        with no image (the bot lists the new file); JobCancelledError is left to the caller."""
        assert request.merge is not None, "a merge job carries its MergeOptions"
        started = time.monotonic()
        reporter = ProgressReporter(
            request.job_id, send, self.config.preview_interval_s, self.config.preview_max_side, self.previewer
        )
        try:
            merge.merge_checkpoints(request.merge, lambda done, total: reporter(done, total, None), is_cancelled)
        except JobCancelledError:
            raise
        except Exception as exc:
            _report_failure(request, exc, send, doing="The merge")
            return
        send(JobCompleted(request.job_id, (), None, time.monotonic() - started))

    def _describe(self, request: GenerateRequest, is_cancelled: IsCancelled, send: Send) -> None:
        """A describe job: its prompt suggestions, no images (inference.describe)."""
        send(JobStarted(request.job_id))
        started = time.monotonic()
        reporter = ProgressReporter(request.job_id, send, self.config.preview_interval_s, self.config.preview_max_side)
        try:
            suggestions = self.describers.describe(request, reporter, is_cancelled)
        except JobCancelledError:
            raise
        except Exception as exc:
            _report_failure(request, exc, send, doing="Describing the image")
            return
        seconds = time.monotonic() - started
        log.info("job %s: %d suggestion(s) in %.1f s", request.job_id, len(suggestions), seconds)
        send(JobCompleted(request.job_id, (), None, seconds, suggestions=suggestions))

    def _save_and_report(
        self, request: GenerateRequest, made: list, flags: list[bool], seconds: float, send: Send,
        notes: list[str] | None = None,
    ) -> None:
        """Write the job's files and send its JobCompleted (on the saver's thread, if any)."""
        started = time.monotonic()
        try:
            results, grid = self._save(request, made, flags, notes)
        except Exception as exc:  # a full disk, a folder that cannot be made: the job fails
            _report_failure(request, exc, send, doing="Saving the images")
            return
        log.info("job %s: %d image(s) in %.1f s, saved in %.2f s", request.job_id, len(results), seconds,
                 time.monotonic() - started)
        send(JobCompleted(request.job_id, results, grid, seconds))

    def _make(self, request: GenerateRequest, on_step: OnStep, is_cancelled: IsCancelled) -> list:
        """The job's images, by kind: see inference.workflows, inference.upscale, inference.plot_runner.

        A plot makes each of its cells through here again, as a job of its own kind. LoRAs
        named in the prompt (<lora:name:weight>) are applied for this job only, and the request
        passed on has them taken out of its prompts (inference.networks).
        """
        if request.kind == JobKind.PLOT:
            return plot_runner.run_plot(request, self._make, on_step, is_cancelled)
        if request.kind == JobKind.UPSCALE:
            return upscale.run_upscale(self.upscalers, request, on_step, is_cancelled)
        if request.kind == JobKind.RESTORE_FACES:
            return [face_restore.source_image(request)]  # restored by _restore_faces
        if request.kind == JobKind.SEGMENT:
            return self.segments.run(request)
        with self.networks.applied(self.cache, request) as request, self.vaes.applied(
            networks.job_pipeline(self.cache, request), request
        ):
            if request.kind == JobKind.SD_UPSCALE:
                return sd_upscale.run_sd_upscale(self.cache, self.upscalers, request, on_step, is_cancelled)
            if request.kind in (JobKind.TXT2IMG, JobKind.VARIATION) and request.hires is None and not request.refiner:
                pipe = self.cache.get(request.model)
                return generate(pipe, request, on_step=on_step, is_cancelled=is_cancelled)
            return workflows.run_workflow(self.cache, self.upscalers, request, on_step, is_cancelled)

    def _restore_faces(
        self, request: GenerateRequest, made: list, on_step: OnStep, is_cancelled: IsCancelled
    ) -> tuple[list, list[str]]:
        """A1111's "Restore faces" on each image the job made (after an upscale's resize, as
        its Extras tab orders them), with a note for each image where no face was found."""
        if request.restore_faces is None or request.kind == JobKind.SEGMENT:
            # A mask preview carries its inpaint's options: the inpaint restores the faces.
            return made, [""] * len(made)
        return face_restore.restore_images(self.face_restorers, made, request.restore_faces, on_step, is_cancelled)

    def _save(
        self, request: GenerateRequest, made: list, flags: list[bool], notes: list[str] | None = None
    ) -> tuple[tuple[ImageResult, ...], str | None]:
        outputs_dir = self.config.outputs_dir
        level = self.config.png_compress_level
        day = dt.date.today()  # one folder per job even when it runs across midnight
        # An upscale's infotext is its source's (no checkpoint ran, so no model hash either).
        upscaling = request.kind in (JobKind.UPSCALE, JobKind.RESTORE_FACES)
        segmenting = request.kind == JobKind.SEGMENT  # no checkpoint ran either
        model_hash = None if upscaling or segmenting else self._model_hash(request.model)
        hashes = {} if upscaling or segmenting else self._file_hashes(request)
        refiner_hash = self._model_hash(request.refiner) if request.refiner else None
        # A plot's cells are jobs of their own (prompt, steps, model... differ): each image
        # gets its cell's infotext, so A1111's PNG Info remakes that cell alone.
        cells = plot_runner.cell_requests(request) if request.plot is not None else None
        results = []
        files = []  # (image, path, infotext), written side by side below
        for index, image in enumerate(made):
            seed = request.seeds[index]
            if upscaling:
                text = face_restore.extras_infotext(request)
            elif segmenting:
                text = segment_infotext(request)
            elif cells is not None:
                cell = cells[index]
                text = infotext.request_infotext(
                    cell, 0, model_hash=self._model_hash(cell.model), model_name=self._infotext_model(cell.model),
                    **self._file_hashes(cell),
                )
            else:
                text = infotext.request_infotext(
                    request, index, model_hash=model_hash, model_name=self._infotext_model(request.model),
                    refiner_hash=refiner_hash, **hashes,
                )
            path = images.image_path(outputs_dir, request.job_id, index, seed, day)
            files.append((image, path, text))
            subseed = request.subseeds[index] if request.subseeds else None
            results.append(
                ImageResult(
                    index, seed, subseed, str(path), text, image.width, image.height, flagged=flags[index],
                    note=notes[index] if notes else "",
                )
            )
        grid = None
        if request.plot is not None:
            # The plot's labelled grid is its result, even for a single cell.
            grid_file = images.grid_path(outputs_dir, request.job_id, day)
            grid_image = plot_runner.labelled_grid(made, request.plot)
            files.append((grid_image, grid_file, results[0].infotext))
            grid = str(grid_file)
        elif len(made) > 1:
            grid_file = images.grid_path(outputs_dir, request.job_id, day)
            # A1111 gives a grid the first image's infotext.
            files.append((images.make_grid(made), grid_file, results[0].infotext))
            grid = str(grid_file)
        images.save_pngs(files, compress_level=level)
        return tuple(results), grid

    def _safety_flags(self, request: GenerateRequest, made: list) -> list[bool]:
        """One batched classifier call for the job's images, when it asked for one (queued
        outside an age-restricted channel); an error here fails the job: never post unchecked."""
        if not request.safety_check or self.safety_checker is None:
            return [False] * len(made)
        flags = self.safety_checker.flags(made)
        if any(flags):
            log.info("job %s: the safety checker flagged image(s) %s", request.job_id,
                     [index for index, flagged in enumerate(flags) if flagged])
        return flags

    def _file_hashes(self, request: GenerateRequest) -> dict:
        """request_infotext's "VAE hash" and network hashes (inference.common.file_hashes
        computes each file's once); a VAE removed since the job ran gets none."""
        try:
            vae_hash = self.vaes.short_hash(request.vae)
        except (OSError, networks.InvalidRequestError):
            vae_hash = None
        return {"vae_hash": vae_hash, "network_hashes": self.networks.infotext_hashes(request)}

    def update_models(self, specs: tuple[ModelSpec, ...]) -> None:
        """The bot's new list of models (UpdateModels): removed and changed ones unloaded."""
        unloaded = self.cache.replace_specs(specs)
        self._model_hashes.clear()
        log.info("models updated: %d served%s", len(specs), f"; unloaded {', '.join(unloaded)}" if unloaded else "")

    def start_model_hashes(self, request: GenerateRequest) -> None:
        """Begin hashing the checkpoints a job's infotext names (its model, its refiner) that
        the bot sent no hash for; _model_hash waits for them when the images are saved."""
        for name in (request.model, request.refiner):
            if name and name in self.cache.specs:  # an unknown model fails the job elsewhere
                self._model_hash_future(name)

    def _model_hash(self, name: str) -> str | None:
        try:
            return self._model_hash_future(name).result()
        except OSError:  # the file went away since the job ran: its images are still saved
            return None

    def _model_hash_future(self, name: str) -> Future[str | None]:
        if name not in self._model_hashes:
            self._model_hashes[name] = _hashed_in_background(self.cache.spec(name))
        return self._model_hashes[name]

    def _infotext_model(self, name: str) -> str:
        """A1111's "Model": a single file's name without suffix (its name_for_extra), else ours."""
        source = Path(self.cache.spec(name).source)
        return source.stem if source.suffix.lower() in SINGLE_FILE_SUFFIXES else name


def _hashed_in_background(spec: ModelSpec) -> Future[str | None]:
    """A1111's "Model hash" of the spec's file: the bot's when it sent one, else computed on a
    daemon thread (once per model per worker: a multi-GB file takes seconds to read, and a
    worker told to stop never waits for it)."""
    future: Future[str | None] = Future()
    if spec.sha256:  # hashed by the bot in the background, cached in its database
        future.set_result(spec.sha256[:MODEL_HASH_LENGTH])
        return future

    def run() -> None:
        try:
            future.set_result(model_file_hash(spec.source))
        except BaseException as exc:  # handed to whoever waits on it
            future.set_exception(exc)

    threading.Thread(target=run, name=f"model-hash-{spec.name}", daemon=True).start()
    return future

def loading_events(job_ids: tuple[int, ...], send: Send) -> LoadListener:
    """A PipelineCache load listener telling each of these jobs (ModelLoading) that it waits
    on a model being read."""

    def report(model: str, done: int, total: int) -> None:
        for job_id in job_ids:
            send(ModelLoading(job_id, model, done, total))

    return report


def _report_failure(request: GenerateRequest, exc: Exception, send: Send, doing: str = "Generation") -> None:
    """The job's JobFailed, with a message for the user: theirs to fix, or what broke."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        log.warning("job %s: out of GPU memory", request.job_id, exc_info=True)
        free_accelerator_memory()
        send(JobFailed(request.job_id, _out_of_memory_message(request)))
    elif isinstance(exc, (UnknownModelError, InvalidRequestError)):
        detail = getattr(exc, "detail", "")
        log.warning("job %s: rejected: %s%s", request.job_id, exc, f" ({detail})" if detail else "")
        send(JobFailed(request.job_id, _shorten(str(exc)), _shorten(detail)))
    else:
        # The channel sees a sentence; the exception (paths, Errno, class names) is the log's
        # and the moderators' (bot.policy.audit), through JobFailed.detail.
        log.exception("job %s failed", request.job_id, exc_info=exc)
        message = f"{doing} failed. The error was logged for the server's moderators."
        send(JobFailed(request.job_id, message, _shorten(f"{type(exc).__name__}: {exc}")))


def _out_of_memory_message(request: GenerateRequest) -> str:
    return (
        f"Out of GPU memory making {len(request.seeds)} image(s) at "
        f"{request.width}x{request.height}. Try a smaller size or fewer images."
    )


def _shorten(message: str) -> str:
    message = " ".join(message.split())
    if len(message) <= MAX_FAILURE_MESSAGE:
        return message
    return message[: MAX_FAILURE_MESSAGE - 1] + "…"


def _quiet_library_progress_bars() -> None:
    """Hide diffusers' and transformers' load bars in the worker's log.

    huggingface_hub's download bars stay: a first download can take minutes and deserves one.
    """
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
