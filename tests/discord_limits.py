"""Discord's documented limits on what a bot sends, as checks that name each breach.

Each function takes a request's JSON as the bot sent it and returns the breaches found, one
sentence each ("embeds[0].title is 300 characters, Discord takes at most 256"). The fake
Discord of tests/discord_wire.py runs them on every request and refuses a request that breaks
one, as Discord does (400, or 413 for an upload), so the bot meets the same answer it would
get in production. The numbers come from Discord's developer documentation (Message, Embed,
Message Components, Application Commands; the upload limit is the interaction's
attachment_size_limit, docs/DISCORD.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

CONTENT = 2000
EMBEDS = 10
EMBED_TITLE, EMBED_DESCRIPTION, EMBED_FIELDS = 256, 4096, 25
FIELD_NAME, FIELD_VALUE, FOOTER_TEXT, AUTHOR_NAME = 256, 1024, 2048, 256
EMBED_TOTAL = 6000  # every embed of a message together
ACTION_ROWS, ROW_BUTTONS = 5, 5
CUSTOM_ID, BUTTON_LABEL = 100, 80
SELECT_OPTIONS = 25
ATTACHMENTS = 10
COMPONENTS_V2 = 1 << 15  # a message flag: then the top level is not made of action rows
# Components V2 (a LayoutView): every component counts, nested ones too, and the text displays
# hold 4000 characters together; such a message has no content or embeds.
V2_COMPONENTS, V2_TEXT = 40, 4000
TEXT_DISPLAY, SEPARATOR, CONTAINER = 10, 14, 17  # (ACTION_ROW and the modal kinds: below)

# Application commands.
COMMANDS_GLOBAL = 100  # chat input commands; user and message menus have 15 each
MENU_COMMANDS = 15
COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")
COMMAND_DESCRIPTION = 100
COMMAND_OPTIONS = 25
OPTION_CHOICES = 25
CHOICE_NAME, CHOICE_VALUE = 100, 100
# A command's names, descriptions and choices together (8000 since February 2024, 4000 before:
# discord-api-docs#6668); of a localized text, only its longest version counts.
COMMAND_TOTAL = 8000


def message_breaches(payload: Mapping[str, Any], where: str = "") -> list[str]:
    """Content, embeds, components and attachment entries of a message's JSON."""
    found: list[str] = []
    content = payload.get("content")
    if content is not None and len(content) > CONTENT:
        found.append(f"{where}content is {len(content)} characters, Discord takes at most {CONTENT}")
    embeds = payload.get("embeds") or []
    if len(embeds) > EMBEDS:
        found.append(f"{where}{len(embeds)} embeds, Discord takes at most {EMBEDS}")
    total = 0
    for number, embed in enumerate(embeds):
        embed_found, embed_total = _embed_breaches(embed, f"{where}embeds[{number}].")
        found += embed_found
        total += embed_total
    if total > EMBED_TOTAL:
        found.append(f"{where}the embeds hold {total} characters together, Discord takes at most {EMBED_TOTAL}")
    flags = int(payload.get("flags") or 0)
    if flags & COMPONENTS_V2 and (content or embeds):
        found.append(f"{where}a components v2 message cannot have content or embeds")
    found += _components_breaches(payload.get("components") or [], flags, where)
    attachments = payload.get("attachments") or []
    if len(attachments) > ATTACHMENTS:
        found.append(f"{where}{len(attachments)} attachments, Discord takes at most {ATTACHMENTS}")
    return found


def _embed_breaches(embed: Mapping[str, Any], where: str) -> tuple[list[str], int]:
    found: list[str] = []
    texts = [
        ("title", embed.get("title"), EMBED_TITLE),
        ("description", embed.get("description"), EMBED_DESCRIPTION),
        ("footer.text", (embed.get("footer") or {}).get("text"), FOOTER_TEXT),
        ("author.name", (embed.get("author") or {}).get("name"), AUTHOR_NAME),
    ]
    fields = embed.get("fields") or []
    if len(fields) > EMBED_FIELDS:
        found.append(f"{where}fields: {len(fields)}, Discord takes at most {EMBED_FIELDS}")
    for number, field in enumerate(fields):
        for key, limit in (("name", FIELD_NAME), ("value", FIELD_VALUE)):
            text = field.get(key)
            if not text or not str(text).strip():
                found.append(f"{where}fields[{number}].{key} is empty, which Discord refuses")
            texts.append((f"fields[{number}].{key}", text, limit))
    total = 0
    for name, text, limit in texts:
        if text is None:
            continue
        total += len(text)
        if len(text) > limit:
            found.append(f"{where}{name} is {len(text)} characters, Discord takes at most {limit}")
    return found, total


def _components_breaches(rows: list[Mapping[str, Any]], flags: int, where: str) -> list[str]:
    if flags & COMPONENTS_V2:
        return _v2_breaches(rows, where)
    found: list[str] = []
    if len(rows) > ACTION_ROWS:
        found.append(f"{where}{len(rows)} action rows, Discord takes at most {ACTION_ROWS}")
    custom_ids: list[str] = []
    for number, row in enumerate(rows):
        place = f"{where}components[{number}]"
        if row.get("type") != ACTION_ROW:
            found.append(f"{place} is of type {row.get('type')}, not an action row")
            continue
        found += _row_breaches(row, place, custom_ids)
    return found + _repeated(custom_ids, f"{where}custom_id repeated within the message")


def _v2_breaches(top: list[Mapping[str, Any]], where: str) -> list[str]:
    """A Components V2 message of the kinds the bot sends: text displays, separators and
    action rows, at the top or in containers. Other kinds are not checked here (a breach)."""
    found: list[str] = []
    custom_ids: list[str] = []
    count, text = 0, 0

    def walk(components: list[Mapping[str, Any]], place: str) -> None:
        nonlocal count, text
        for number, component in enumerate(components):
            here, kind = f"{place}[{number}]", component.get("type")
            count += 1
            if kind == ACTION_ROW:
                found.extend(_row_breaches(component, here, custom_ids))
                count += len(component.get("components") or [])
            elif kind == TEXT_DISPLAY:
                content = component.get("content") or ""
                if not content:
                    found.append(f"{here}: a text display without content")
                text += len(content)
            elif kind == CONTAINER:
                walk(component.get("components") or [], f"{here}.components")
            elif kind != SEPARATOR:
                found.append(f"{here}: components v2 of type {kind} are not checked here: add their limits before using them")

    walk(top, f"{where}components")
    if not top:
        found.append(f"{where}a components v2 message without components")
    if count > V2_COMPONENTS:
        found.append(f"{where}{count} components, Discord takes at most {V2_COMPONENTS} in a components v2 message")
    if text > V2_TEXT:
        found.append(f"{where}the text displays hold {text} characters together, Discord takes at most {V2_TEXT}")
    return found + _repeated(custom_ids, f"{where}custom_id repeated within the message")


def _row_breaches(row: Mapping[str, Any], place: str, custom_ids: list[str]) -> list[str]:
    """An action row's children: 1 to 5 buttons or a single select; their custom_ids noted."""
    found: list[str] = []
    children = row.get("components") or []
    buttons = [child for child in children if child.get("type") == 2]
    if not children or (len(buttons) != len(children) and len(children) != 1):
        found.append(f"{place} must hold 1 to {ROW_BUTTONS} buttons or a single select")
    if len(buttons) > ROW_BUTTONS:
        found.append(f"{place} holds {len(buttons)} buttons, Discord takes at most {ROW_BUTTONS}")
    for index, child in enumerate(children):
        found += _component_breaches(child, f"{place}.components[{index}]")
        if child.get("custom_id"):
            custom_ids.append(child["custom_id"])
    return found


def _repeated(custom_ids: list[str], what: str) -> list[str]:
    repeated = sorted({custom_id for custom_id in custom_ids if custom_ids.count(custom_id) > 1})
    return [f"{what}: {repeated}"] if repeated else []


def _component_breaches(component: Mapping[str, Any], place: str) -> list[str]:
    found: list[str] = []
    custom_id = component.get("custom_id")
    if component.get("type") == 2 and component.get("style") == 5:  # a link button
        if custom_id or not component.get("url"):
            found.append(f"{place}: a link button has a url and no custom_id")
    elif not custom_id:
        found.append(f"{place} has no custom_id")
    if custom_id and len(custom_id) > CUSTOM_ID:
        found.append(f"{place}.custom_id is {len(custom_id)} characters, Discord takes at most {CUSTOM_ID}")
    label = component.get("label")
    if component.get("type") == 2:
        if label and len(label) > BUTTON_LABEL:
            found.append(f"{place}.label is {len(label)} characters, Discord takes at most {BUTTON_LABEL}")
        if not label and not component.get("emoji"):
            found.append(f"{place}: a button needs a label or an emoji")
    options = component.get("options")
    if options is not None and not 1 <= len(options) <= SELECT_OPTIONS:
        found.append(f"{place} has {len(options)} options, Discord takes 1 to {SELECT_OPTIONS}")
    return found


def upload_breaches(payload: Mapping[str, Any], files: Mapping[int, str]) -> list[str]:
    """The uploads of a multipart request (files[n] -> its filename) against its JSON's
    attachments entries: each file has its entry (id n), at most 10 of them."""
    found: list[str] = []
    if len(files) > ATTACHMENTS:
        found.append(f"{len(files)} files uploaded, Discord takes at most {ATTACHMENTS}")
    entries = {_as_int(entry.get("id")): entry for entry in payload.get("attachments") or []}
    for index, filename in sorted(files.items()):
        entry = entries.get(index)
        if entry is None:
            found.append(f"files[{index}] ({filename}) has no attachments entry with id {index}")
        elif entry.get("filename") not in (None, filename):
            found.append(f"files[{index}] is {filename} but its attachments entry says {entry['filename']}")
    missing = sorted(set(new_attachment_ids(payload)) - set(files))
    if missing:
        found.append(f"attachments entries {missing} stand for files that were not uploaded")
    return found


def oversized(files: Mapping[int, tuple[str, int]], limit: int) -> list[str]:
    """Uploads (files[n] -> filename, size) over the interaction's attachment_size_limit:
    Discord answers 413 and the message is lost."""
    return [
        f"files[{index}] ({filename}) is {size} bytes, over the upload limit of {limit}"
        for index, (filename, size) in sorted(files.items()) if size > limit
    ]


def new_attachment_ids(payload: Mapping[str, Any]) -> list[int]:
    """The attachments entries that stand for files of this request (small ids: the files'
    indexes); a snowflake keeps an attachment the message has already."""
    return [ident for entry in payload.get("attachments") or [] if (ident := _as_int(entry.get("id"))) < ATTACHMENTS]


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def command_breaches(commands: Iterable[Mapping[str, Any]]) -> list[str]:
    """A bulk overwrite of application commands (PUT .../commands): Discord refuses the whole
    list (error 50035) when one command breaks a limit, and then no command is registered."""
    commands = list(commands)
    found: list[str] = []
    chat = [command for command in commands if command.get("type", 1) == 1]
    if len(chat) > COMMANDS_GLOBAL:
        found.append(f"{len(chat)} chat commands, Discord takes at most {COMMANDS_GLOBAL}")
    for kind, name in ((2, "user"), (3, "message")):
        menus = [command for command in commands if command.get("type") == kind]
        if len(menus) > MENU_COMMANDS:
            found.append(f"{len(menus)} {name} menu commands, Discord takes at most {MENU_COMMANDS}")
    for command in commands:
        where = f"/{command.get('name')}"
        if command.get("type", 1) == 1:
            found += _name_and_description(command, where)
            found += _options_breaches(command.get("options") or [], where)
            total = _command_characters(command)
            if total > COMMAND_TOTAL:
                found.append(f"{where}: {total} characters in its names, descriptions and choices, Discord takes at most {COMMAND_TOTAL}")
    return found


def _name_and_description(item: Mapping[str, Any], where: str) -> list[str]:
    found = []
    name = item.get("name") or ""
    if not COMMAND_NAME.match(name) or name != name.lower():
        found.append(f"{where}: the name {name!r} is not 1 to 32 lowercase letters, digits, - or _")
    description = item.get("description") or ""
    if not 1 <= len(description) <= COMMAND_DESCRIPTION:
        found.append(f"{where}: the description is {len(description)} characters, Discord takes 1 to {COMMAND_DESCRIPTION}")
    return found


def _options_breaches(options: list[Mapping[str, Any]], where: str) -> list[str]:
    found: list[str] = []
    if len(options) > COMMAND_OPTIONS:
        found.append(f"{where} has {len(options)} options, Discord takes at most {COMMAND_OPTIONS}")
    seen_optional = False
    for option in options:
        place = f"{where} {option.get('name')}"
        found += _name_and_description(option, place)
        if option.get("type") in (1, 2):  # a subcommand or a group
            found += _options_breaches(option.get("options") or [], place)
            continue
        if option.get("required"):
            if seen_optional:
                found.append(f"{place}: a required option after an optional one")
        else:
            seen_optional = True
        choices = option.get("choices") or []
        if len(choices) > OPTION_CHOICES:
            found.append(f"{place} has {len(choices)} choices, Discord takes at most {OPTION_CHOICES}")
        if choices and option.get("autocomplete"):
            found.append(f"{place} has both choices and autocomplete")
        for choice in choices:
            if not 1 <= len(choice.get("name") or "") <= CHOICE_NAME:
                found.append(f"{place}: the choice name {choice.get('name')!r} is not 1 to {CHOICE_NAME} characters")
            value = choice.get("value")
            if isinstance(value, str) and not 1 <= len(value) <= CHOICE_VALUE:
                found.append(f"{place}: the choice value {value!r} is not 1 to {CHOICE_VALUE} characters")
    return found


def _command_characters(item: Mapping[str, Any]) -> int:
    total = _longest(item, "name") + _longest(item, "description")
    for choice in item.get("choices") or []:
        total += _longest(choice, "name") + len(str(choice.get("value", "")))
    return total + sum(_command_characters(option) for option in item.get("options") or [])


def _longest(item: Mapping[str, Any], key: str) -> int:
    texts = [item.get(key) or "", *(item.get(f"{key}_localizations") or {}).values()]
    return max(len(text) for text in texts)


# Modals (an interaction callback of type 9) and the components discord.py 2.7 puts in them: a
# text input in an action row of its own, or a label (type 18) holding a text input, a select
# or a file upload (type 19).
MODAL_TITLE, MODAL_COMPONENTS = 45, 5
LABEL_TEXT, LABEL_DESCRIPTION = 45, 100
TEXT_INPUT_LABEL, TEXT_INPUT_VALUE, TEXT_INPUT_PLACEHOLDER = 45, 4000, 100
SELECT_PLACEHOLDER, OPTION_TEXT = 150, 100  # a select option's label, value and description
FILE_UPLOAD_VALUES = 10
ACTION_ROW, TEXT_INPUT, STRING_SELECT, LABEL, FILE_UPLOAD = 1, 4, 3, 18, 19


def modal_breaches(modal: Mapping[str, Any]) -> list[str]:
    """A modal's JSON (the callback's data): its title, custom_id and 1 to 5 top-level
    components, each a text input's action row or a label."""
    found: list[str] = []
    title = modal.get("title") or ""
    if not 1 <= len(title) <= MODAL_TITLE:
        found.append(f"the modal's title is {len(title)} characters, Discord takes 1 to {MODAL_TITLE}")
    found += _custom_id_breaches(modal.get("custom_id"), "the modal")
    components = modal.get("components") or []
    if not 1 <= len(components) <= MODAL_COMPONENTS:
        found.append(f"the modal has {len(components)} components, Discord takes 1 to {MODAL_COMPONENTS}")
    custom_ids: list[str] = []
    for number, component in enumerate(components):
        place = f"modal.components[{number}]"
        if component.get("type") == ACTION_ROW:
            children = component.get("components") or []
            if len(children) != 1 or children[0].get("type") != TEXT_INPUT:
                found.append(f"{place}: an action row in a modal holds one text input")
                continue
            inner = children[0]
            found += _text_input_breaches(inner, f"{place}.components[0]", labelled=False)
        elif component.get("type") == LABEL:
            found += _bounded(component.get("label"), 1, LABEL_TEXT, f"{place}.label")
            found += _bounded(component.get("description"), 0, LABEL_DESCRIPTION, f"{place}.description")
            inner = component.get("component") or {}
            kind = inner.get("type")
            if kind == TEXT_INPUT:
                found += _text_input_breaches(inner, f"{place}.component", labelled=True)
            elif kind == STRING_SELECT:
                found += _select_breaches(inner, f"{place}.component")
            elif kind == FILE_UPLOAD:
                found += _file_upload_breaches(inner, f"{place}.component")
            else:
                found.append(f"{place}: a label holds a text input, a select or a file upload, not type {kind}")
        else:
            found.append(f"{place} is of type {component.get('type')}: a modal holds action rows and labels")
            continue
        if inner.get("custom_id"):
            custom_ids.append(inner["custom_id"])
    return found + _repeated(custom_ids, "custom_id repeated within the modal")


def _custom_id_breaches(custom_id: Any, place: str) -> list[str]:
    if not isinstance(custom_id, str) or not 1 <= len(custom_id) <= CUSTOM_ID:
        return [f"{place}'s custom_id {custom_id!r} is not 1 to {CUSTOM_ID} characters"]
    return []


def _bounded(text: Any, least: int, most: int, place: str) -> list[str]:
    if text is None and least == 0:
        return []
    length = len(text) if isinstance(text, str) else -1
    if not least <= length <= most:
        return [f"{place} is {length} characters, Discord takes {least} to {most}"]
    return []


def _text_input_breaches(text_input: Mapping[str, Any], place: str, *, labelled: bool) -> list[str]:
    found = _custom_id_breaches(text_input.get("custom_id"), place)
    if text_input.get("style") not in (1, 2):
        found.append(f"{place}.style is {text_input.get('style')!r}: 1 (short) or 2 (paragraph)")
    if labelled:  # the label holds its text; a text input in a label has none of its own
        if "label" in text_input:
            found.append(f"{place}: a text input in a label has no label of its own")
    else:
        found += _bounded(text_input.get("label"), 1, TEXT_INPUT_LABEL, f"{place}.label")
    least, most = text_input.get("min_length"), text_input.get("max_length")
    if least is not None and not 0 <= least <= TEXT_INPUT_VALUE:
        found.append(f"{place}.min_length is {least}, Discord takes 0 to {TEXT_INPUT_VALUE}")
    if most is not None and not 1 <= most <= TEXT_INPUT_VALUE:
        found.append(f"{place}.max_length is {most}, Discord takes 1 to {TEXT_INPUT_VALUE}")
    if least is not None and most is not None and least > most:
        found.append(f"{place}: min_length {least} is over max_length {most}")
    value = text_input.get("value")
    if value is not None:
        found += _bounded(value, 0, min(most or TEXT_INPUT_VALUE, TEXT_INPUT_VALUE), f"{place}.value")
    found += _bounded(text_input.get("placeholder"), 0, TEXT_INPUT_PLACEHOLDER, f"{place}.placeholder")
    return found


def _select_breaches(select: Mapping[str, Any], place: str) -> list[str]:
    found = _custom_id_breaches(select.get("custom_id"), place)
    options = select.get("options") or []
    if not 1 <= len(options) <= SELECT_OPTIONS:
        found.append(f"{place} has {len(options)} options, Discord takes 1 to {SELECT_OPTIONS}")
    for number, option in enumerate(options):
        found += _bounded(option.get("label"), 1, OPTION_TEXT, f"{place}.options[{number}].label")
        found += _bounded(option.get("value"), 1, OPTION_TEXT, f"{place}.options[{number}].value")
        found += _bounded(option.get("description"), 0, OPTION_TEXT, f"{place}.options[{number}].description")
    if not select.get("min_values", 1) <= select.get("max_values", 1) <= len(options):
        found.append(f"{place}: min_values {select.get('min_values', 1)} and max_values {select.get('max_values', 1)} for {len(options)} options")
    found += _bounded(select.get("placeholder"), 0, SELECT_PLACEHOLDER, f"{place}.placeholder")
    return found


def _file_upload_breaches(upload: Mapping[str, Any], place: str) -> list[str]:
    found = _custom_id_breaches(upload.get("custom_id"), place)
    least, most = upload.get("min_values", 1), upload.get("max_values", 1)
    if not 0 <= least <= most <= FILE_UPLOAD_VALUES or most < 1:
        found.append(f"{place}: min_values {least} and max_values {most}, Discord takes 0 <= min <= max, 1 <= max <= {FILE_UPLOAD_VALUES}")
    return found


# Autocomplete: an answer (callback type 8) of at most 25 choices.
AUTOCOMPLETE_CHOICES = 25


def autocomplete_breaches(data: Mapping[str, Any], option_type: int) -> list[str]:
    """An autocomplete answer's data, for an option of this type (3: string, 4: integer, 10: number)."""
    choices = data.get("choices")
    if not isinstance(choices, list):
        return ["an autocomplete answer without its choices list"]
    found: list[str] = []
    if len(choices) > AUTOCOMPLETE_CHOICES:
        found.append(f"{len(choices)} autocomplete choices, Discord takes at most {AUTOCOMPLETE_CHOICES}")
    for number, choice in enumerate(choices):
        found += _bounded(choice.get("name"), 1, CHOICE_NAME, f"choices[{number}].name")
        value = choice.get("value")
        if option_type == 3:
            found += _bounded(value, 0, CHOICE_VALUE, f"choices[{number}].value")
        elif option_type in (4, 10) and (isinstance(value, bool) or not isinstance(value, int | float)):
            found.append(f"choices[{number}].value is {value!r}, not a number for a number option")
    return found
