"""Styles in the database: a member's own, and a server's (which only its managers change).

A personal style has user_id set and follows its owner to every server; a server style has
guild_id set. Names are unique per scope, compared without case ("Cinematic" and "cinematic"
are the same style), and a name used in both scopes means the member's own. Names hold no
comma: several styles are given as one comma-separated option. A scope has few styles, so
lookups read the scope's rows and match in Python (SQLite's lower() knows only ASCII).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import or_, select

from bot.errors import InvalidOption, NothingToDo, echo
from bot.prompts.cleaning import clean_prompt_text, shows
from db.models import Style
from db.session import Database

MAX_NAME_LENGTH = 100  # the column's size
MAX_STYLE_TEXT = 4000  # Discord's longest option; the whole prompt is checked again per job
MAX_IMPORT_ROWS = 1000


@dataclass(frozen=True)
class Scope:
    """Where a style lives: a member's own (guild_id None) or a server's (user_id None)."""

    user_id: int | None = None
    guild_id: int | None = None

    @property
    def label(self) -> str:
        return "server style" if self.guild_id is not None else "personal style"


def clean_name(name: str) -> str:
    name = " ".join(name.split())
    if not shows(name):  # a zero-width space alone looks like no name
        raise InvalidOption("A style needs a name.")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidOption(f"A style name may be {MAX_NAME_LENGTH} characters long, got {len(name)}.")
    if "," in name:
        raise InvalidOption(
            f"A style name cannot hold a comma (several styles are given comma-separated): `{echo(name)}`."
        )
    return name


def split_names(text: str | None) -> list[str]:
    """The style option: one name or several, comma-separated, applied in that order."""
    return [name for name in (" ".join(part.split()) for part in (text or "").split(",")) if name]


def _where(scope: Scope):  # type: ignore[no-untyped-def]
    if scope.guild_id is not None:
        return Style.guild_id == scope.guild_id
    return (Style.user_id == scope.user_id) & Style.guild_id.is_(None)


async def visible_styles(db: Database, user_id: int, guild_id: int | None) -> list[Style]:
    """A member's own styles, then this server's, each by name (autocomplete, /style list)."""
    wanted = (Style.user_id == user_id) & Style.guild_id.is_(None)
    if guild_id is not None:
        wanted = or_(wanted, Style.guild_id == guild_id)
    async with db.session() as session:
        rows = list(await session.scalars(select(Style).where(wanted)))
    return sorted(rows, key=lambda s: (s.guild_id is not None, s.name.casefold()))


async def find_styles(db: Database, names: list[str], user_id: int, guild_id: int | None) -> list[Style]:
    """The styles named, in that order; the member's own before the server's of the same name."""
    if not names:
        return []
    styles = await visible_styles(db, user_id, guild_id)
    found = []
    for name in names:
        style = next((s for s in styles if s.name.casefold() == name.casefold()), None)
        if style is None:
            where = " or on this server" if guild_id is not None else ""
            raise InvalidOption(f"You have no style named `{echo(name)}`{where}. See /style list.")
        found.append(style)
    return found


async def add_style(db: Database, scope: Scope, name: str, prompt: str, negative_prompt: str, created_by: int) -> Style:
    name = clean_name(name)
    _check_texts(prompt, negative_prompt)
    async with db.session() as session, session.begin():
        existing = await session.scalars(select(Style).where(_where(scope)))
        if any(s.name.casefold() == name.casefold() for s in existing):
            raise InvalidOption(
                f"There is already a {scope.label} named `{name}`: delete it first, or pick another name."
            )
        style = Style(
            user_id=scope.user_id, guild_id=scope.guild_id, name=name, prompt=clean_prompt_text(prompt).strip(),
            negative_prompt=clean_prompt_text(negative_prompt).strip(), created_by=created_by,
        )
        session.add(style)
    return style


def _check_texts(prompt: str, negative_prompt: str) -> None:
    if not clean_prompt_text(prompt).strip() and not negative_prompt.strip():
        raise InvalidOption("A style needs a prompt or a negative prompt.")
    for what, text in (("prompt", prompt), ("negative prompt", negative_prompt)):
        if len(text) > MAX_STYLE_TEXT:
            raise InvalidOption(f"A style's {what} may be {MAX_STYLE_TEXT} characters long, got {len(text)}.")


async def delete_style(db: Database, scope: Scope, name: str) -> str:
    """Delete a style by name; returns the name as it was stored."""
    wanted = " ".join(name.split()).casefold()
    async with db.session() as session, session.begin():
        rows = await session.scalars(select(Style).where(_where(scope)))
        style = next((s for s in rows if s.name.casefold() == wanted), None)
        if style is None:
            raise NothingToDo(f"There is no {scope.label} named `{echo(name)}`. See /style list.")
        await session.delete(style)
        return style.name


@dataclass(frozen=True)
class ImportReport:
    added: list[str]
    replaced: list[str]
    skipped: list[str]  # "row 7: why"


def parse_styles_csv(data: bytes) -> tuple[list[tuple[str, str, str]], list[str]]:
    """A1111's styles.csv (header row; columns name, prompt, negative_prompt) as rows to
    import, and the rows skipped with why."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidOption("The file is not UTF-8 text: export styles.csv from AUTOMATIC1111 again.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = {(c or "").strip().lower() for c in reader.fieldnames or ()}
    if "name" not in columns or "prompt" not in columns:
        raise InvalidOption(
            "This is not an A1111 styles.csv: its first row must name the columns name, prompt, negative_prompt."
        )
    rows: list[tuple[str, str, str]] = []
    skipped: list[str] = []
    try:
        for number, raw in enumerate(reader, start=2):
            row = {(k or "").strip().lower(): (v or "") for k, v in raw.items() if isinstance(v, str)}
            if len(rows) + len(skipped) >= MAX_IMPORT_ROWS:
                raise InvalidOption(f"The file has more than {MAX_IMPORT_ROWS} styles; split it.")
            if not row.get("name", "").strip():
                if any(v.strip() for v in row.values()):
                    skipped.append(f"row {number}: no name")
                continue
            try:
                name = clean_name(row["name"])
                _check_texts(row.get("prompt", ""), row.get("negative_prompt", ""))
            except InvalidOption as error:
                skipped.append(f"row {number}: {error.message}")
                continue
            prompt, negative = (clean_prompt_text(row.get(key, "")).strip() for key in ("prompt", "negative_prompt"))
            rows.append((name, prompt, negative))
    except csv.Error as error:
        raise InvalidOption(f"The file is not valid CSV ({error}).") from None
    return rows, skipped


async def import_styles(
    db: Database, guild_id: int, data: bytes, created_by: int, refuse: Callable[[str, str], str | None] | None = None
) -> ImportReport:
    """A server's styles from A1111's styles.csv: new names are added, known names replaced
    (the file is the newer version), and bad rows skipped with why; all in one transaction.
    `refuse(prompt, negative_prompt)`: why a style may not be stored here (a banned term), or None."""
    rows, skipped = parse_styles_csv(data)
    if refuse is not None:
        kept = []
        for name, prompt, negative in rows:
            reason = refuse(prompt, negative)
            if reason is None:
                kept.append((name, prompt, negative))
            else:
                skipped.append(f"{name}: {reason}")
        rows = kept
    if not rows:
        why = f" Skipped: {'; '.join(skipped)}" if skipped else ""
        raise InvalidOption(f"The file holds no styles to import.{why}")
    added: list[str] = []
    replaced: list[str] = []
    scope = Scope(guild_id=guild_id)
    async with db.session() as session, session.begin():
        existing = {s.name.casefold(): s for s in await session.scalars(select(Style).where(_where(scope)))}
        for name, prompt, negative in rows:
            style = existing.get(name.casefold())
            if style is None:
                style = Style(
                    guild_id=guild_id, name=name, prompt=prompt, negative_prompt=negative, created_by=created_by
                )
                session.add(style)
                existing[name.casefold()] = style
                added.append(name)
            else:  # a stored style, or a name the file repeats (its last row wins)
                style.name, style.prompt, style.negative_prompt, style.created_by = name, prompt, negative, created_by
                if style.id is not None and name not in replaced:
                    replaced.append(name)
    return ImportReport(added=added, replaced=replaced, skipped=skipped)
