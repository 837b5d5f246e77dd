"""A1111 "infotext": the generation parameters written into every PNG, and read back.

The format is A1111's (modules/processing.py create_infotext and
modules/infotext_utils.py parse_generation_parameters), byte for byte, so that images made by
the bot can be dropped into A1111's "PNG Info" tab and A1111 images into /pnginfo:

    a photo of a cat
    Negative prompt: blurry
    Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 123, ...

This module imports neither torch nor discord: the bot uses it too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from importlib import metadata

from inference.common.protocol import GenerateRequest, JobKind
from inference.common.protocol import RNG_SOURCES
from inference.common.sampler_catalog import AUTOMATIC, SAMPLERS, infotext_fields, split_combined_name

NEGATIVE_PROMPT_PREFIX = "Negative prompt:"
PROMPT_KEY = "Prompt"
NEGATIVE_PROMPT_KEY = "Negative prompt"

# A1111's regexes: a "Key: value" pair where the value is either a JSON string or runs to the
# next comma. A key starts with a word character and may hold spaces, '-' and '/'.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_KEY = re.compile(r"\w[\w \-/]+")
# A1111 treats the last line as parameters only when it holds at least this many pairs, so a
# prompt line such as "style: anime" stays part of the prompt.
_MIN_PARAMS_ON_LAST_LINE = 3
# _PARAM backtracks over a long run of key characters (its time grows faster than the line),
# and a PNG text chunk may hold a megabyte. A real parameters line, three ControlNet units and
# all, is under 900 characters; a longer last line is read as text of the prompt.
MAX_PARAMETERS_LINE = 4000


def _package_version() -> str:
    try:
        return metadata.version("sdbot")
    except metadata.PackageNotFoundError:
        return "0.1.0"


DEFAULT_VERSION = f"sdbot {_package_version()}"


def quote(value: object) -> str:
    """A1111's rule: values holding ',', ':' or a newline are written as JSON strings."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def format_number(value: float) -> str:
    """7.0 -> "7", 7.5 -> "7.5": how A1111's infotexts show CFG scale and strengths."""
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def build_infotext(
    prompt: str,
    negative_prompt: str,
    *,
    steps: int,
    sampler: str,
    schedule_type: str = AUTOMATIC,
    cfg_scale: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    model_hash: str | None = None,
    vae: str | None = None,
    vae_hash: str | None = None,
    subseed: int | None = None,
    subseed_strength: float = 0.0,
    extra: Mapping[str, object] | None = None,
    version: str | None = DEFAULT_VERSION,
) -> str:
    """One image's infotext in A1111's layout and key order.

    ``sampler`` is an A1111 1.10 name, or a combined one ("DPM++ 2M Karras"); "Schedule type"
    is written as A1111 1.10 writes it (sampler_catalog.infotext_fields: the one that ran).

    "Negative prompt" is left out when empty, "Model hash", "VAE" and "VAE hash" when None, the
    variation keys when the strength is 0 (as A1111 does); ``extra`` pairs ("Denoising
    strength", "Clip skip"...) go after them and before "Version". Pass version=None to leave
    "Version" out.
    """
    sampler_fields = infotext_fields(*split_combined_name(sampler, schedule_type, convert_automatic=False))
    params: dict[str, object | None] = {
        "Steps": steps,
        "Sampler": sampler_fields["Sampler"],
        "Schedule type": sampler_fields.get("Schedule type"),
        "CFG scale": format_number(cfg_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash,
        "Model": model,
        "VAE hash": vae_hash,
        "VAE": vae,
        "Variation seed": subseed if subseed_strength else None,
        "Variation seed strength": format_number(subseed_strength) if subseed_strength else None,
    }
    if subseed_strength and subseed is None:
        raise ValueError(f"subseed_strength is {subseed_strength} but subseed is None")
    for key, value in (extra or {}).items():
        if not _KEY.fullmatch(key) or key in params or key == "Version":
            raise ValueError(f"bad or duplicate infotext key {key!r}")
        params[key] = value
    params["Version"] = version
    parameters_line = ", ".join(
        f"{key}: {quote(value)}" for key, value in params.items() if value is not None
    )
    negative_line = f"\n{NEGATIVE_PROMPT_PREFIX} {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative_line}\n{parameters_line}".strip()


def request_infotext(
    request: GenerateRequest,
    index: int,
    *,
    model_hash: str | None = None,
    vae_hash: str | None = None,
    model_name: str | None = None,
    network_hashes: Mapping[str, str] | None = None,
    version: str | None = DEFAULT_VERSION,
    refiner_hash: str | None = None,
) -> str:
    """The infotext of image ``index`` of a job: its own seed (and subseed), shared rest.

    ``vae_hash`` is the request's VAE file's (file_hashes.MODEL_HASH_LENGTH digits);
    ``network_hashes`` the "Lora hashes" and "TI hashes" entries (network_hashes_entries).
    ``model_name`` is A1111's "Model" when it differs from the job's model name: a single
    file's name without suffix, as A1111 writes it for a checkpoint in a subfolder.

    "Size" is the request's width x height, which is what A1111 writes too: for the hires fix
    the first pass's size (with "Hires upscale" beside it), for "inpaint only masked" the size
    the crop was inpainted at. Pasted into A1111, the text so makes the same job again.
    """
    if not 0 <= index < len(request.seeds):
        raise ValueError(f"image index {index} out of range for {len(request.seeds)} seeds")
    return build_infotext(
        request.prompt,
        request.negative_prompt,
        steps=request.steps,
        sampler=request.sampler,
        schedule_type=request.schedule_type,
        cfg_scale=request.cfg_scale,
        seed=request.seeds[index],
        width=request.width,
        height=request.height,
        model=model_name or request.model,
        model_hash=model_hash,
        vae=request.vae or None,
        vae_hash=vae_hash if request.vae else None,
        subseed=request.subseeds[index] if request.subseeds else None,
        subseed_strength=request.subseed_strength,
        extra=_generation_extras(request, network_hashes or {}, refiner_hash),
        version=version,
    )


def _generation_extras(
    request: GenerateRequest, network_hashes: Mapping[str, str], refiner_hash: str | None
) -> dict[str, object]:
    """The keys after "Variation seed strength", in A1111 1.10's order (create_infotext):
    "Seed resize from", "Denoising strength", "Clip skip" (only above 1), "ENSD", "RNG", then
    its extra_generation_params in the order A1111 adds them: the workflow's keys, the
    refiner's, the network hashes (added as the networks load) and "Eta" (added as the sampler
    starts)."""
    params = workflow_parameters(request)
    extras: dict[str, object] = {}
    if request.seed_resize_from is not None:
        extras["Seed resize from"] = "{}x{}".format(*request.seed_resize_from)
    if "Denoising strength" in params:
        extras["Denoising strength"] = params.pop("Denoising strength")
    if request.clip_skip > 1:
        extras["Clip skip"] = request.clip_skip
    sampler = SAMPLERS[split_combined_name(request.sampler)[0]]
    eta = sampler.eta_default if request.eta is None else request.eta
    # A1111's is_sampler_using_eta_noise_seed_delta: a sampler that uses ENSD, with eta not 0.
    if request.eta_noise_seed_delta and sampler.uses_ensd and eta != 0:
        extras["ENSD"] = request.eta_noise_seed_delta
    if request.rng != RNG_SOURCES[0]:
        extras["RNG"] = request.rng
    eta_key = {sampler.eta_infotext_key: format_number(eta)} if sampler.uses_eta and eta != sampler.eta_default else {}
    return {**extras, **params, **refiner_parameters(request, refiner_hash), **network_hashes, **eta_key}


def network_hashes_entries(loras: Mapping[str, str], embeddings: Mapping[str, str]) -> dict[str, str]:
    """A1111's "Lora hashes" and "TI hashes" values from name -> short hash, each only when
    some were used: ``name: hash`` pairs joined by ", ", with ':' and ',' taken out of names
    (extensions-builtin/Lora/extra_networks_lora.py)."""

    def joined(hashes: Mapping[str, str]) -> str:
        return ", ".join(f"{name.replace(':', '').replace(',', '')}: {short}" for name, short in hashes.items())

    entries = {"Lora hashes": joined(loras), "TI hashes": joined(embeddings)}
    return {key: value for key, value in entries.items() if value}


def refiner_parameters(request: GenerateRequest, refiner_hash: str | None = None) -> dict[str, object]:
    """A1111's refiner keys: "Refiner" as its checkpoint's short title, "name [hash]" (the
    name alone when the hash is not known), and "Refiner switch at"; {} without a refiner."""
    if not request.refiner:
        return {}
    title = f"{request.refiner} [{refiner_hash}]" if refiner_hash else request.refiner
    return {"Refiner": title, "Refiner switch at": format_number(request.refiner_switch_at)}


def workflow_parameters(request: GenerateRequest) -> dict[str, object]:
    """A1111's infotext keys for the hires fix, img2img, inpaint and outpaint, in its order.

    Only the keys that apply, as A1111 writes them: "Denoising strength" for every pass from
    an image, the mask's keys for inpaint, the hires keys ("Hires steps" only when not 0,
    meaning the same as Steps).
    """
    params: dict[str, object] = {}
    hires = request.hires
    if request.kind in (JobKind.TXT2IMG, JobKind.VARIATION):
        if hires is not None:
            params["Denoising strength"] = format_number(hires.denoising_strength)
            params["Hires upscale"] = format_number(hires.scale)
            if hires.steps:
                params["Hires steps"] = hires.steps
            params["Hires upscaler"] = hires.upscaler
        return params
    image = request.image
    if image is None or request.kind == JobKind.UPSCALE:
        return params
    params["Denoising strength"] = format_number(image.denoising_strength)
    inpaint = request.inpaint if request.kind == JobKind.INPAINT else None
    only_masked = inpaint is not None and inpaint.only_masked
    if request.kind != JobKind.OUTPAINT and not only_masked:
        # A1111's labels: "Just resize", "Crop and resize", "Resize and fill".
        params["Resize mode"] = str(image.resize_mode).capitalize()
    if request.kind == JobKind.SD_UPSCALE and request.upscale is not None:
        # A1111's scripts/sd_upscale.py adds these two to extra_generation_params.
        params["SD upscale overlap"] = request.upscale.tile_overlap
        params["SD upscale upscaler"] = request.upscale.upscaler
    if inpaint is not None:
        if inpaint.mask_blur:
            params["Mask blur"] = inpaint.mask_blur
        params["Masked content"] = str(inpaint.masked_content)
        if only_masked:
            params["Inpaint area"] = "Only masked"
            params["Masked area padding"] = inpaint.only_masked_padding
    return params


def parse_infotext(text: str) -> dict[str, str]:
    """Read an A1111 infotext back: {"Prompt": ..., "Negative prompt": ..., "Steps": "20", ...}.

    Values stay strings, unquoted, as A1111's parser leaves them ("Size" stays "512x512").
    A text without a parameters line comes back as a prompt alone.
    """
    *lines, last_line = text.strip().split("\n")
    if len(last_line) > MAX_PARAMETERS_LINE or len(_PARAM.findall(last_line)) < _MIN_PARAMS_ON_LAST_LINE:
        lines.append(last_line)
        last_line = ""

    # Accumulated as A1111 does (an empty first line is dropped), to read texts identically.
    prompt = negative_prompt = ""
    in_negative = False
    for line in lines:
        line = line.strip()
        if line.startswith(NEGATIVE_PROMPT_PREFIX):
            in_negative = True
            line = line[len(NEGATIVE_PROMPT_PREFIX) :].strip()
        if in_negative:
            negative_prompt += ("\n" if negative_prompt else "") + line
        else:
            prompt += ("\n" if prompt else "") + line

    result = {PROMPT_KEY: prompt, NEGATIVE_PROMPT_KEY: negative_prompt}
    for key, value in _PARAM.findall(last_line):
        result[key] = unquote(value)
    return result
