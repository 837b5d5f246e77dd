"""The tables: users (with their defaults), jobs (every parameter and the job's state), images.

A job row is the truth about a job: the in-memory queue of the bot only wakes the dispatcher,
and everything shown to users (queue positions, results, history) is read from here.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, UTCDateTime, utcnow


class JobStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


ACTIVE_STATUSES = (JobStatus.PENDING, JobStatus.RUNNING)
FINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)
# Job.error: the sentence members are shown, then after this mark what broke (an exception's
# text, paths) for the log and the audit entry moderators read; in one column, so old rows
# (a sentence alone) read the same.
ERROR_DETAIL_MARK = "\nFor moderators: "
# The largest value of an Integer column (the jobs' and terms' ids): PostgreSQL's INTEGER is 32
# bits, and SQLite refuses a bound number past 64. A number past it, which a member can type
# (/show, /cancel: Discord allows 53 bits) or put in a forged button, names no row.
MAX_INTEGER = 2**31 - 1


def is_row_id(number: int) -> bool:
    """Whether ``number`` can be the id of a row of an Integer primary key (from 1)."""
    return 0 < number <= MAX_INTEGER


class User(Base):
    __tablename__ = "users"

    # The Discord user id; 0 is the local console of `sdbot generate`.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Defaults applied to every new job of this user (None: the server's default).
    default_model: Mapped[str | None] = mapped_column(String(100))
    default_sampler: Mapped[str | None] = mapped_column(String(40))
    default_steps: Mapped[int | None] = mapped_column(Integer)
    default_cfg_scale: Mapped[float | None] = mapped_column(Float)
    default_width: Mapped[int | None] = mapped_column(Integer)
    default_height: Mapped[int | None] = mapped_column(Integer)
    default_negative_prompt: Mapped[str | None] = mapped_column(Text)
    # An aspect ratio ("3:2") instead of a width and height: its size follows each model's base size.
    default_aspect: Mapped[str | None] = mapped_column(String(20))
    # Style name(s), comma-separated, applied when a job names none (bot.prompts.style_store).
    default_style: Mapped[str | None] = mapped_column(String(200))
    # The upscaler of the Upscale buttons and /upscale (None: the server's default).
    default_upscaler: Mapped[str | None] = mapped_column(String(100))
    # "Automatic", "None" or a VAE's name (bot.jobs.model_checks.check_vae), and A1111's clip skip.
    default_vae: Mapped[str | None] = mapped_column(String(255))
    default_clip_skip: Mapped[int | None] = mapped_column(Integer)
    # The SDXL refiner this member's SDXL txt2img jobs get when they name none.
    default_refiner: Mapped[str | None] = mapped_column(String(200))
    # A1111's random number generator source ("GPU", "CPU", "NV") and ENSD.
    default_rng: Mapped[str | None] = mapped_column(String(10))
    default_ensd: Mapped[int | None] = mapped_column(BigInteger)
    # A1111's "Restore faces" on this member's generating jobs: "Off", "GFPGAN" or "CodeFormer"
    # (None: the server's default, off); the visibility of the Restore faces button and
    # /upscale's restoration (A1111's Extras), and CodeFormer's weight.
    default_face_restorer: Mapped[str | None] = mapped_column(String(20))
    default_face_visibility: Mapped[float | None] = mapped_column(Float)
    default_codeformer_weight: Mapped[float | None] = mapped_column(Float)
    # Results shown only to their owner (an ephemeral status message, then a DM once the
    # interaction token has expired) instead of in the channel.
    private_results: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")

    jobs: Mapped[list[Job]] = relationship(back_populates="user")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # The scheduler's hot queries: a status's jobs in order, and a user's jobs by status.
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_user_id_status", "user_id", "status"),
        # A member's recent GPU use (the sum of cost since a moment), read for each member
        # waiting at every claim: the cost is in the index, so no row is read.
        Index("ix_jobs_user_id_started_at_cost", "user_id", "started_at", "cost"),
        # The claim: the waiting job with the lowest start tag (bot.jobs.fairness), the first
        # entry of this index that no other claimer holds. Only the waiting jobs are in it, so
        # the planner sees how few they are among a million finished ones whatever its
        # statistics say (a query must name the status as a literal to use it).
        Index(
            "ix_jobs_waiting_start_tag_id", "start_tag", "id",
            sqlite_where=text("status = 'pending'"), postgresql_where=text("status = 'pending'"),
        ),
        # /history pages a member's jobs newest first: SQLite ends every index with the row id,
        # so this one holds them in that order and a page is read without sorting them all.
        Index("ix_jobs_user_id", "user_id"),
        # Start-up reads the private jobs (bot.jobs.privacy), a few among a million.
        Index("ix_jobs_private_id", "id", sqlite_where=text("private = 1"), postgresql_where=text("private")),
        # The daily image-retention pass finds old jobs by when they finished (bot/retention.py).
        Index("ix_jobs_finished_at", "finished_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(20))  # inference.common.protocol.JobKind
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.PENDING)

    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str] = mapped_column(String(100))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    cfg_scale: Mapped[float] = mapped_column(Float)
    sampler: Mapped[str] = mapped_column(String(40))
    count: Mapped[int] = mapped_column(Integer)
    # The seed of image 0; see bot.jobs.job_rows.image_seeds for the others.
    seed: Mapped[int] = mapped_column(BigInteger)
    subseed: Mapped[int | None] = mapped_column(BigInteger)
    subseed_strength: Mapped[float] = mapped_column(Float, default=0.0)

    # Image workflows (see inference.common.protocol: ImageInput, InpaintOptions...); None where the
    # job's kind has no use for them.
    init_image_path: Mapped[str | None] = mapped_column(Text)
    denoising_strength: Mapped[float | None] = mapped_column(Float)
    resize_mode: Mapped[str | None] = mapped_column(String(20))
    loopback_count: Mapped[int | None] = mapped_column(Integer)
    loopback_final_strength: Mapped[float | None] = mapped_column(Float)
    mask_path: Mapped[str | None] = mapped_column(Text)
    mask_blur: Mapped[int | None] = mapped_column(Integer)
    masked_content: Mapped[str | None] = mapped_column(String(20))
    inpaint_only_masked: Mapped[bool | None] = mapped_column(Boolean)
    inpaint_padding: Mapped[int | None] = mapped_column(Integer)
    outpaint_left: Mapped[int | None] = mapped_column(Integer)
    outpaint_right: Mapped[int | None] = mapped_column(Integer)
    outpaint_top: Mapped[int | None] = mapped_column(Integer)
    outpaint_bottom: Mapped[int | None] = mapped_column(Integer)
    hires_scale: Mapped[float | None] = mapped_column(Float)
    hires_steps: Mapped[int | None] = mapped_column(Integer)
    hires_denoising: Mapped[float | None] = mapped_column(Float)
    hires_upscaler: Mapped[str | None] = mapped_column(String(100))
    # SDXL's refiner (a configured model's name) and A1111's "Refiner switch at" (0-1).
    refiner: Mapped[str | None] = mapped_column(String(200))
    refiner_switch_at: Mapped[float | None] = mapped_column(Float)
    upscale_factor: Mapped[float | None] = mapped_column(Float)
    upscaler: Mapped[str | None] = mapped_column(String(100))
    # A1111's "Restore faces" (inference.common.protocol.RestoreFacesOptions): the restorer
    # (None: none), the visibility and CodeFormer's weight.
    face_restorer: Mapped[str | None] = mapped_column(String(20))
    face_visibility: Mapped[float | None] = mapped_column(Float)
    codeformer_weight: Mapped[float | None] = mapped_column(Float)
    # Seamless tiling (--tile), and an X/Y plot's or prompt matrix's cells and labels as the JSON
    # of inference.common.protocol.PlotOptions (see bot.jobs.plot_params).
    tiling: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # The VAE file it ran with ("": the model's own), "Automatic" resolved when it was queued,
    # and A1111's clip skip (1: none).
    vae: Mapped[str] = mapped_column(String(255), default="", server_default="")
    clip_skip: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # A1111 1.10's sampling and noise choices (bot.jobs.params.JobParameters).
    schedule_type: Mapped[str] = mapped_column(String(40), default="Automatic", server_default="Automatic")
    rng: Mapped[str] = mapped_column(String(10), default="GPU", server_default="GPU")
    eta_noise_seed_delta: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    eta: Mapped[float | None] = mapped_column(Float)
    seed_resize_from_width: Mapped[int | None] = mapped_column(Integer)
    seed_resize_from_height: Mapped[int | None] = mapped_column(Integer)
    plot_json: Mapped[str | None] = mapped_column(Text)
    # A checkpoint merge's MergeOptions as JSON (JobKind.MERGE; bot.jobs.job_rows.merge_options).
    merge_json: Mapped[str | None] = mapped_column(Text)
    # A describe job's interrogator ("clip", "tagger") and its prompt suggestions, a JSON array
    # of strings, best first (inference.common.protocol.DescribeOptions, JobCompleted).
    interrogator: Mapped[str | None] = mapped_column(String(20))
    suggestions: Mapped[str | None] = mapped_column(Text)
    # Masks from words (JobKind.SEGMENT, inference.common.protocol.SegmentOptions): the words,
    # the threshold and the dilation in pixels; the row's inpaint columns are the job that
    # "Looks right" queues with the mask found.
    segment_words: Mapped[str | None] = mapped_column(Text)
    segment_threshold: Mapped[float | None] = mapped_column(Float)
    segment_dilation: Mapped[int | None] = mapped_column(Integer)

    # Checked by the worker's safety classifier (set when the job was queued outside an
    # age-restricted channel and a classifier is configured): see Image.flagged.
    safety_check: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Shown to its owner alone (private results, or made from a private result): its status
    # message is ephemeral, and a result arriving after the token expired goes by DM.
    private: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # The result was removed by its owner or a moderator (the message, optionally the files).
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    removed_by: Mapped[int | None] = mapped_column(BigInteger)
    # Its image files (and uploads no other job uses) were deleted by [images] keep_days; the
    # row stays for /history, the audit log and quotas.
    files_expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # Derived work (reroll, variation, upscale, inpaint...) points at the job and image it came from.
    parent_job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    parent_image_index: Mapped[int | None] = mapped_column(Integer)

    # Where the job's status/result message lives; None for console jobs.
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    message_id: Mapped[int | None] = mapped_column(BigInteger)
    # The interaction's attachment_size_limit, kept so a result posted after a restart fits.
    upload_limit_bytes: Mapped[int | None] = mapped_column(BigInteger)

    attempts: Mapped[int] = mapped_column(Integer, default=0)  # times a worker was given it
    error: Mapped[str | None] = mapped_column(Text)
    grid_path: Mapped[str | None] = mapped_column(Text)
    seconds: Mapped[float | None] = mapped_column(Float)  # generation time, for ETAs
    # GPU time in units (bot.jobs.cost), known before it runs: turns, caps and ETAs use it.
    cost: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # While it waits: its place in the fair order, its member's recent use plus the cost of
    # their jobs waiting before it (bot.jobs.fairness). Written when it is queued.
    start_tag: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # Separate workers (`sdbot worker`, bot/jobs/worker_agent.py): the worker running it, and
    # the token of its claim; a worker's writes about the job name the token, so one whose
    # lease expired (the job went back to the queue) can no longer complete it.
    worker_name: Mapped[str | None] = mapped_column(String(100))
    lease_token: Mapped[str | None] = mapped_column(String(32))
    # Its latest progress as a separate worker reported it (the bot relays it to Discord).
    progress_step: Mapped[int | None] = mapped_column(Integer)
    progress_total: Mapped[int | None] = mapped_column(Integer)
    progress_preview: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(back_populates="jobs")
    images: Mapped[list[Image]] = relationship(
        back_populates="job", order_by="Image.index", cascade="all, delete-orphan"
    )

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def member_error(self) -> str | None:
        """The error as members see it: without what only moderators read (ERROR_DETAIL_MARK)."""
        return None if self.error is None else self.error.partition(ERROR_DETAIL_MARK)[0]


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    subseed: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    infotext: Mapped[str] = mapped_column(Text)
    # The safety classifier flagged it: posted blurred, spoilered or not at all (server policy).
    flagged: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # A line for its owner about it from the worker ("No faces were found..."), or None.
    note: Mapped[str | None] = mapped_column(Text)
    # Its public post alone (a U button): while that message exists, another U links to it
    # instead of posting the image again (bot.actions.post_single_image).
    posted_channel_id: Mapped[int | None] = mapped_column(BigInteger)
    posted_message_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    job: Mapped[Job] = relationship(back_populates="images")


class Style(Base):
    """A named prompt fragment (A1111's styles): a member's own, or a server's (admins manage).

    A1111's semantics: a style prompt holding ``{prompt}`` has the user's prompt put there;
    otherwise the style is appended to the prompt after a comma. The same for the negative part.
    Exactly one of guild_id (a server style) and user_id (a personal style) is set.
    """

    __tablename__ = "styles"
    __table_args__ = (
        Index("ix_styles_guild_id_name", "guild_id", "name"),
        Index("ix_styles_user_id_name", "user_id", "name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)
    user_id: Mapped[int | None] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text, default="")
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- community operations: per-server policy, moderation and the audit log (bot.policy) ---------


class GuildPolicy(Base):
    """A server's rules, set by its moderators with /admin. No row: the [policy] defaults.

    The id lists are JSON arrays of Discord ids; an empty list means "no restriction"."""

    __tablename__ = "guild_policies"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    # Channels the bot answers in (empty: every channel it can see).
    channel_ids: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    # Roles that may use the bot at all (empty: everyone).
    user_role_ids: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    # Roles that may use costly features: upscale 4x, hires fix, large sizes, count 4 (empty: everyone).
    costly_role_ids: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    # Limits per member (None: the [policy] / [queue] defaults; 0: no limit).
    images_per_day: Mapped[int | None] = mapped_column(Integer)
    cooldown_s: Mapped[int | None] = mapped_column(Integer)
    max_pending: Mapped[int | None] = mapped_column(Integer)
    # GPU time in units (bot.jobs.cost), at most the bot's own [queue] caps.
    max_job_cost: Mapped[int | None] = mapped_column(Integer)
    max_waiting_cost: Mapped[int | None] = mapped_column(Integer)
    # What happens to an image the safety classifier flags: "blur", "spoiler" or "withhold".
    flagged_action: Mapped[str | None] = mapped_column(String(20))
    # Where jobs and moderation actions are mirrored (None: nowhere).
    log_channel_id: Mapped[int | None] = mapped_column(BigInteger)
    # A1111's noise settings for jobs here, under a member's own (None: the [limits] defaults).
    default_rng: Mapped[str | None] = mapped_column(String(10))
    default_ensd: Mapped[int | None] = mapped_column(BigInteger)
    # The interrogator of /describe here, "clip" or "tagger" (None: [describe] interrogator).
    interrogator: Mapped[str | None] = mapped_column(String(20))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RoleLimit(Base):
    """A role's own limits in one server; a member with several roles gets the most generous."""

    __tablename__ = "role_limits"
    __table_args__ = (UniqueConstraint("guild_id", "role_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger)
    role_id: Mapped[int] = mapped_column(BigInteger)
    images_per_day: Mapped[int | None] = mapped_column(Integer)  # 0: no limit
    cooldown_s: Mapped[int | None] = mapped_column(Integer)
    max_pending: Mapped[int | None] = mapped_column(Integer)
    max_job_cost: Mapped[int | None] = mapped_column(Integer)
    max_waiting_cost: Mapped[int | None] = mapped_column(Integer)


class BlockedTerm(Base):
    """A banned word or regular expression of one server.

    scope "banned" applies everywhere; scope "nsfw" applies outside age-restricted channels.
    kind "word" matches whole words, case-insensitively; kind "regex" is a Python regex,
    compiled when it is set (a pattern that does not compile is refused then)."""

    __tablename__ = "blocked_terms"
    __table_args__ = (UniqueConstraint("guild_id", "scope", "kind", "pattern"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, index=True)
    scope: Mapped[str] = mapped_column(String(10))
    kind: Mapped[str] = mapped_column(String(10))
    pattern: Mapped[str] = mapped_column(Text)
    created_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ban(Base):
    """A member banned from the bot in one server (and, while banned anywhere, in DMs)."""

    __tablename__ = "bans"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    reason: Mapped[str] = mapped_column(Text, default="")
    banned_by: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntry(Base):
    """One line of the audit log: a job's outcome, a refusal, or a moderation action.

    `action` is a dotted name (bot.policy.audit.Action); `details` is short text for people."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_guild_id_created_at", "guild_id", "created_at"),
        Index("ix_audit_log_guild_id_target_user_id", "guild_id", "target_user_id"),
        # /admin audit's "by or about this member" is counted from this index alone (SQLite
        # does not split the OR across two indexes there), not from the table's rows.
        Index("ix_audit_log_guild_id_actor_id_target_user_id", "guild_id", "actor_id", "target_user_id"),
        Index("ix_audit_log_created_at", "created_at"),  # the daily prune (audit_retention_days)
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)  # None: a DM
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    actor_id: Mapped[int] = mapped_column(BigInteger)  # who did it (the bot's id for outcomes)
    action: Mapped[str] = mapped_column(String(40))
    target_user_id: Mapped[int | None] = mapped_column(BigInteger)  # whose job or who was banned
    job_id: Mapped[int | None] = mapped_column(Integer)
    details: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ModelRule(Base):
    """Who sees and uses one model in one server, set by its moderators with /admin models.
    No row: everyone, everywhere. `model` is the model's name (A1111's, for a discovered one)."""

    __tablename__ = "model_rules"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    model: Mapped[str] = mapped_column(String(300), primary_key=True)
    # Left out of this server's lists and autocomplete, and refused when named.
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Used only in age-restricted channels (and left out of the lists elsewhere).
    age_restricted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Roles that may use it, a JSON array of Discord ids (empty: everyone).
    role_ids: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# --- model files ---------------------------------------------------------------------------


class FileHash(Base):
    """A model file's sha256 (A1111's "Model hash" is its first 10 hex digits), computed once
    in the background: valid while the file keeps this size and modification time."""

    __tablename__ = "file_hashes"

    path: Mapped[str] = mapped_column(String(1024), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Worker(Base):
    """A worker started on its own (`sdbot worker`): what it runs on and can run, and its
    heartbeat. A worker whose heartbeat is older than [worker] lease_timeout_s is gone: its
    jobs go back to the queue (bot.jobs.leases)."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    device: Mapped[str] = mapped_column(String(100))
    # Model names, each between two "|" ("|sd15|sdxl|"), so a claim can test one with LIKE on
    # both backends.
    models_loaded: Mapped[str] = mapped_column(Text, default="", server_default="")
    models_loadable: Mapped[str] = mapped_column(Text, default="", server_default="")
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    current_job_id: Mapped[int | None] = mapped_column(Integer)
    jobs_done: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
