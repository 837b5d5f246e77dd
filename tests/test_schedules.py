"""A1111 1.10's samplers, schedule types, sigmas and step counts (sampler_catalog, schedules).

Each schedule type's sigmas are derived again here in float64 numpy, straight from the
formula as A1111's sd_schedulers.py and k-diffusion write it, and compared with the module's
float32 torch arithmetic; a few hard numbers pin SD 1.5's table itself.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy import stats

from inference import schedules
from inference.common import sampler_catalog as catalog
from inference.common.sampler_catalog import (
    AUTOMATIC,
    SAMPLERS,
    SCHEDULE_TYPE_LABELS,
    ScheduleNotAcceptedError,
    UnknownSamplerError,
    UnknownScheduleTypeError,
)

# --- the reference: A1111's formulas in float64 ----------------------------------------------


def reference_table() -> np.ndarray:
    """SD's sigma table, t = 0..999: ldm's betas (linear in sqrt space, float64), alphas_cumprod
    stored as float32 by the model, sigma = sqrt((1 - a) / a)."""
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    alphas_cumprod = np.cumprod(1 - betas).astype(np.float32).astype(np.float64)
    return np.sqrt((1 - alphas_cumprod) / alphas_cumprod)


TABLE = reference_table()
SIGMA_MIN, SIGMA_MAX = TABLE[0], TABLE[-1]


def sigma_at(t: np.ndarray) -> np.ndarray:
    """k-diffusion's t_to_sigma: log sigma interpolated linearly between timesteps."""
    return np.exp(np.interp(t, np.arange(len(TABLE)), np.log(TABLE)))


def with_zero(sigmas) -> np.ndarray:
    return np.append(np.asarray(sigmas, dtype=np.float64), 0.0)


def reference(schedule: str, n: int) -> np.ndarray:
    steps = np.arange(n)
    if schedule == "Karras":
        rho = 7.0
        top, bottom = SIGMA_MAX ** (1 / rho), SIGMA_MIN ** (1 / rho)
        return with_zero((top + steps / (n - 1) * (bottom - top)) ** rho)
    if schedule in ("Exponential", "Polyexponential"):  # polyexponential's rho is 1
        return with_zero(np.exp(np.linspace(math.log(SIGMA_MAX), math.log(SIGMA_MIN), n)))
    if schedule in ("Uniform", "Normal"):  # t from 999 to 0 in n values
        return with_zero(sigma_at(np.linspace(999, 0, n)))
    if schedule == "SGM Uniform":  # n + 1 values of t, the last (t = 0) dropped
        return with_zero(sigma_at(np.linspace(999, 0, n + 1)[:-1]))
    if schedule == "KL Optimal":  # n + 1 values ending at sigma_min, no 0 appended
        share = np.arange(n + 1) / n
        return np.tan(share * np.arctan(SIGMA_MIN) + (1 - share) * np.arctan(SIGMA_MAX))
    if schedule == "Align Your Steps":
        published = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029]
        if n == len(published):
            return with_zero(published)
        ramp = np.interp(np.linspace(0, 1, n), np.linspace(0, 1, 11), np.log(published[::-1]))
        return with_zero(np.exp(ramp)[::-1])
    if schedule == "Simple":  # every (1000 / n)-th sigma from the top
        return with_zero([TABLE[-(1 + int(x * 1000 / n))] for x in steps])
    if schedule == "DDIM":  # t = 1, 1 + 1000 // n, ... reversed
        return with_zero(TABLE[1 :: max(1000 // n, 1)][::-1])
    if schedule == "Beta":
        quantiles = stats.beta.ppf(1 - np.linspace(0, 1, n), 0.6, 0.6)
        return with_zero(SIGMA_MIN + quantiles * (SIGMA_MAX - SIGMA_MIN))
    raise AssertionError(schedule)


def reference_for(sampler: str, schedule: str, steps: int) -> np.ndarray:
    info = SAMPLERS[sampler]
    resolved = info.automatic_schedule if schedule == AUTOMATIC else schedule
    if not info.discard_next_to_last_sigma:
        return reference(resolved or "Uniform", steps)
    sigmas = reference(resolved or "Uniform", steps + 1)
    return np.append(sigmas[:-2], sigmas[-1:])


ALPHAS_CUMPROD = schedules.sd_alphas_cumprod()
SIGMA_SAMPLERS = [name for name, info in SAMPLERS.items() if info.family == catalog.K_DIFFUSION]


def ours(sampler: str, schedule: str, steps: int) -> np.ndarray:
    sigmas = schedules.sampler_sigmas(sampler, schedule, steps, ALPHAS_CUMPROD)
    assert sigmas.dtype == torch.float32
    return sigmas.numpy().astype(np.float64)


# --- sigmas ---------------------------------------------------------------------------------


def test_sd15s_sigma_table_runs_from_0_0292_to_14_6146():
    table = schedules.DiscreteSigmas.from_alphas_cumprod(ALPHAS_CUMPROD)
    assert len(table.sigmas) == 1000
    assert table.sigma_min.item() == pytest.approx(0.0292, abs=5e-5)
    assert table.sigma_max.item() == pytest.approx(14.6146, abs=5e-5)
    np.testing.assert_allclose(table.sigmas.numpy(), TABLE, rtol=1e-6)


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("schedule", [s for s in SCHEDULE_TYPE_LABELS if s != AUTOMATIC])
def test_each_schedule_types_sigmas_follow_a1111s_formula(schedule, steps):
    got = ours("Euler", schedule, steps)
    want = reference(schedule, steps)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-9)


@pytest.mark.parametrize("steps", [10, 20])
@pytest.mark.parametrize("sampler", SIGMA_SAMPLERS)
def test_automatic_is_each_samplers_default_and_the_penultimate_sigma_is_discarded_where_a1111_does(
    sampler, steps
):
    got = ours(sampler, AUTOMATIC, steps)
    assert len(got) == steps + 1 and got[-1] == 0
    np.testing.assert_allclose(got, reference_for(sampler, AUTOMATIC, steps), rtol=2e-6)


@pytest.mark.parametrize("schedule", ["Karras", "Exponential", "Simple", "DDIM", "KL Optimal"])
def test_discarding_samplers_schedule_one_step_more_with_every_schedule_type(schedule):
    got = ours("DPM++ 3M SDE", schedule, 10)
    np.testing.assert_allclose(got, reference_for("DPM++ 3M SDE", schedule, 10), rtol=2e-6)


def test_the_issues_table_eulers_10_steps_go_14_61_to_0_029_with_t_from_999_to_0():
    sigmas = ours("Euler", AUTOMATIC, 10)
    assert sigmas[0] == pytest.approx(14.6146, abs=1e-4)
    assert sigmas[-2] == pytest.approx(0.0292, abs=1e-4)
    assert sigmas[-1] == 0


def test_dpmpp_2m_runs_karras_by_default_with_its_well_known_numbers():
    want = [14.6146, 9.1029, 5.4784, 3.1686, 1.7494, 0.9141, 0.4469, 0.2014, 0.0819, 0.0292, 0.0]
    np.testing.assert_allclose(ours("DPM++ 2M", AUTOMATIC, 10), want, atol=1e-4)


def test_dpm2_drops_the_penultimate_sigma_of_an_eleven_step_karras_schedule():
    eleven = reference("Karras", 11)
    np.testing.assert_allclose(ours("DPM2", AUTOMATIC, 10), np.append(eleven[:-2], 0.0), rtol=2e-6)


def test_the_schedule_options_move_the_ends_rho_and_the_beta_distribution():
    options = schedules.ScheduleOptions(sigma_min=0.1, sigma_max=10.0, rho=3.0, beta_alpha=0.5, beta_beta=0.7)
    karras = schedules.sampler_sigmas("Euler", "Karras", 5, ALPHAS_CUMPROD, options).numpy()
    ramp = np.linspace(0, 1, 5)
    want = (10 ** (1 / 3) + ramp * (0.1 ** (1 / 3) - 10 ** (1 / 3))) ** 3
    np.testing.assert_allclose(karras, with_zero(want), rtol=2e-6)
    beta = schedules.sampler_sigmas("Euler", "Beta", 5, ALPHAS_CUMPROD, options).numpy()
    quantiles = stats.beta.ppf(1 - np.linspace(0, 1, 5), 0.5, 0.7)
    np.testing.assert_allclose(beta, with_zero(0.1 + quantiles * 9.9), rtol=2e-6)


def test_align_your_steps_uses_its_sdxl_list_for_sdxl():
    sigmas = schedules.sampler_sigmas(
        "Euler", "Align Your Steps", 10, ALPHAS_CUMPROD, schedules.ScheduleOptions(is_sdxl=True)
    )
    published = [14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029]
    ramp = np.interp(np.linspace(0, 1, 10), np.linspace(0, 1, 11), np.log(published[::-1]))
    np.testing.assert_allclose(sigmas.numpy(), with_zero(np.exp(ramp)[::-1]), rtol=2e-6)
    eleven = schedules.sampler_sigmas("Euler", "Align Your Steps", 11, ALPHAS_CUMPROD).numpy()
    np.testing.assert_allclose(eleven, reference("Align Your Steps", 11), rtol=1e-7)


def test_quantized_t_gives_the_same_ends():
    quantized = schedules.sampler_sigmas(
        "Euler", "SGM Uniform", 10, ALPHAS_CUMPROD, schedules.ScheduleOptions(quantize=True)
    )
    np.testing.assert_allclose(quantized.numpy(), reference("SGM Uniform", 10), rtol=2e-6)


def test_lcm_runs_over_its_50_distilled_timesteps():
    sigmas = schedules.sampler_sigmas("LCM", AUTOMATIC, 4, ALPHAS_CUMPROD).numpy()
    # t from 999 to 19 (LCM's smallest timestep), interpolated on its 50-entry table.
    lcm_table = TABLE[19::20]
    index = (np.linspace(999, 19, 4) - 19) / 20
    want = np.exp(np.interp(index, np.arange(50), np.log(lcm_table)))
    np.testing.assert_allclose(sigmas, with_zero(want), rtol=2e-6)


def test_the_timestep_samplers_take_every_1000_over_steps_th_timestep_from_1():
    assert schedules.sampler_timesteps("DDIM", 20).tolist() == list(range(1, 1000, 50))
    assert len(schedules.sampler_timesteps("UniPC", 30)) == 31  # 1000 // 30 = 33: 31 of them
    with pytest.raises(ValueError):
        schedules.sampler_timesteps("Euler", 20)


def test_a_timestep_samplers_sigmas_are_the_models_at_its_timesteps_from_the_last():
    """The k path hands a timestep sampler its timesteps as sigmas (the k denoiser's table
    maps them back exactly): sigma_t = sqrt((1 - a_t) / a_t) at 951, 901, ..., 1, then 0."""
    sigmas = schedules.sampler_sigmas("DDIM", AUTOMATIC, 20, ALPHAS_CUMPROD)
    table = schedules.DiscreteSigmas.from_alphas_cumprod(ALPHAS_CUMPROD)
    want = ((1 - ALPHAS_CUMPROD) / ALPHAS_CUMPROD) ** 0.5
    assert torch.equal(sigmas[:-1], want[list(range(951, 0, -50))]) and sigmas[-1] == 0
    assert table.sigma_to_t(sigmas[:-1]).tolist() == list(range(951, 0, -50))
    assert len(schedules.sampler_sigmas("PLMS", AUTOMATIC, 30, ALPHAS_CUMPROD)) == 32  # 31 timesteps


@pytest.mark.parametrize(("steps", "strength"), [(20, 0.5), (30, 0.6), (6, 0.999)])
def test_timestep_img2img_sigmas_end_with_t_enc_timesteps_after_the_noise_level(steps, strength):
    counts = schedules.img2img_steps(steps, strength)
    timesteps = schedules.sampler_timesteps("DDIM", steps)
    walked = schedules.img2img_sigmas(schedules.sampler_sigmas("DDIM", AUTOMATIC, steps, ALPHAS_CUMPROD), counts, "DDIM")
    given, noised_to = schedules.img2img_timesteps(timesteps, counts)
    table = schedules.DiscreteSigmas.from_alphas_cumprod(ALPHAS_CUMPROD)
    as_timesteps = table.sigma_to_t(walked[:-1]).round().long().tolist()
    assert as_timesteps == [noised_to, *given.flip(0).tolist()] and walked[-1] == 0


# --- step counts ----------------------------------------------------------------------------


@pytest.mark.parametrize(("strength", "run"), [(0.75, 16), (0.5, 11), (1.0, 20), (0.01, 1)])
def test_img2img_runs_int_steps_times_strength_plus_one(strength, run):
    counts = schedules.img2img_steps(20, strength)
    assert counts.schedule_steps == 20 and counts.steps_run == run
    sigmas = schedules.sampler_sigmas("Euler a", AUTOMATIC, 20, ALPHAS_CUMPROD)
    walked = schedules.img2img_sigmas(sigmas, counts)
    assert len(walked) == run + 1 and walked[-1] == 0


def test_a_discarding_sampler_runs_as_many_img2img_steps():
    counts = schedules.img2img_steps(20, 0.75)
    sigmas = schedules.sampler_sigmas("DPM2", AUTOMATIC, 20, ALPHAS_CUMPROD)
    assert len(schedules.img2img_sigmas(sigmas, counts)) == 17


def test_hires_second_pass_runs_its_steps_over_a_longer_schedule():
    counts = schedules.hires_steps(20, 10, 0.55)
    assert (counts.schedule_steps, counts.steps_run) == (18, 10)
    assert schedules.hires_steps(20, 0, 0.55).schedule_steps == 36  # 0: the first pass's 20


def test_fixed_img2img_steps_run_exactly_the_slider():
    counts = schedules.img2img_steps(20, 0.5, fix_steps=True)
    assert (counts.schedule_steps, counts.steps_run) == (40, 20)


def test_timestep_img2img_noises_to_the_t_enc_th_timestep():
    counts = schedules.img2img_steps(20, 0.5)
    given, noised_to = schedules.img2img_timesteps(schedules.sampler_timesteps("DDIM", 20), counts)
    assert given.tolist() == list(range(1, 500, 50)) and noised_to == 501


@pytest.mark.parametrize(
    ("curve", "want"),
    [
        ("Linear", [0.6, 0.5, 0.4, 0.3]),
        ("Aggressive", [0.6, 0.6 - 0.3 * math.sin(math.pi / 6), 0.6 - 0.3 * math.sin(math.pi / 3), 0.3]),
        ("Lazy", [0.6, 0.6 - 0.3 * (1 - math.cos(math.pi / 6)), 0.6 - 0.3 * (1 - math.cos(math.pi / 3)), 0.3]),
    ],
)
def test_loopback_moves_the_strength_along_its_curve(curve, want):
    assert schedules.loopback_strengths(4, 0.6, 0.3, curve) == pytest.approx(want)
    assert schedules.loopback_strengths(1, 0.6, 0.3, curve) == [0.6]


# --- the catalog and its names --------------------------------------------------------------


def test_the_catalog_has_every_a1111_1_10_sampler_and_schedule_type_without_torch():
    assert set(catalog.SAMPLER_NAMES) == {
        "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M", "DPM++ SDE",
        "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM fast", "DPM adaptive", "Restart",
        "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
    }  # fmt: skip
    assert SCHEDULE_TYPE_LABELS == (
        "Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform",
        "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM", "Beta",
    )  # fmt: skip
    assert catalog.DEFAULT_SAMPLER == "DPM++ 2M"
    code = "import sys, inference.common.sampler_catalog; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_what_a1111_records_for_each_sampler():
    defaults = {name: info.automatic_schedule for name, info in SAMPLERS.items() if info.automatic_schedule}
    assert defaults == {
        "DPM++ 2M": "Karras", "DPM++ SDE": "Karras", "DPM++ 2S a": "Karras", "DPM2": "Karras",
        "DPM2 a": "Karras", "Restart": "Karras", "DPM++ 2M SDE": "Exponential",
        "DPM++ 2M SDE Heun": "Exponential", "DPM++ 3M SDE": "Exponential",
    }  # fmt: skip
    assert {n for n, i in SAMPLERS.items() if i.discard_next_to_last_sigma} == {"DPM2", "DPM2 a", "DPM++ 3M SDE"}
    assert {n for n, i in SAMPLERS.items() if i.second_order} == {
        "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ SDE", "Restart"
    }
    assert {n for n, i in SAMPLERS.items() if i.brownian_noise} == {
        "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE"
    }
    assert {n for n, i in SAMPLERS.items() if i.uses_ensd} == {
        "Euler a", "DPM2 a", "DPM++ 2S a", "DPM fast", "DPM adaptive"
    }
    assert SAMPLERS["DPM++ 2S a"].total_steps(10) == 20 and SAMPLERS["Euler a"].total_steps(10) == 10
    assert (SAMPLERS["Euler a"].eta_default, SAMPLERS["Euler a"].eta_infotext_key) == (1.0, "Eta")
    assert (SAMPLERS["DDIM"].eta_default, SAMPLERS["DDIM"].eta_infotext_key) == (0.0, "Eta DDIM")
    assert not SAMPLERS["Euler"].uses_eta and SAMPLERS["DPM++ 2M SDE Heun"].solver_type == "heun"


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("DPM++ 2M Karras", ("DPM++ 2M", "Automatic")),
        ("DPM++ 2M", ("DPM++ 2M", "Automatic")),
        ("Euler a Karras", ("Euler a", "Karras")),
        ("DPM++ 2M SDE Heun", ("DPM++ 2M SDE Heun", "Automatic")),
        ("DPM++ 2M SDE Exponential", ("DPM++ 2M SDE", "Automatic")),
        ("DPM++ SDE Karras", ("DPM++ SDE", "Automatic")),
        ("LMS Karras", ("LMS", "Karras")),
        ("Euler SGMUniform", ("Euler", "SGM Uniform")),
        ("Euler SGM Uniform", ("Euler", "SGM Uniform")),
        ("Euler sgm_uniform", ("Euler", "SGM Uniform")),
        ("euler  A", ("Euler a", "Automatic")),
        ("k_dpmpp_2m", ("DPM++ 2M", "Automatic")),
        ("DDIM CFG++", ("DDIM CFG++", "Automatic")),
    ],
)
def test_combined_names_split_as_a1111_reads_them(written, read):
    assert catalog.split_combined_name(written) == read


def test_a_combined_name_beats_the_separate_schedule_type_and_automatic_can_stay_explicit():
    assert catalog.split_combined_name("Euler Karras", "Exponential") == ("Euler", "Karras")
    assert catalog.split_combined_name("Euler", "Exponential") == ("Euler", "Exponential")
    assert catalog.split_combined_name("DPM2 Karras", convert_automatic=False) == ("DPM2", "Karras")


def test_infotext_writes_the_schedule_type_that_ran():
    assert catalog.infotext_fields("DPM++ 2M") == {"Sampler": "DPM++ 2M", "Schedule type": "Karras"}
    assert catalog.infotext_fields("Euler") == {"Sampler": "Euler"}
    assert catalog.infotext_fields("Euler", "Exponential") == {"Sampler": "Euler", "Schedule type": "Exponential"}
    assert catalog.infotext_fields("UniPC") == {"Sampler": "UniPC"}
    assert catalog.combined_name("DPM++ 2M") == "DPM++ 2M Karras"
    assert catalog.combined_name("Euler a") == "Euler a"


@pytest.mark.parametrize("sampler", catalog.SAMPLER_NAMES)
def test_every_choice_survives_writing_and_reading_back(sampler):
    info = SAMPLERS[sampler]
    for schedule in info.schedule_types:
        name, read = catalog.split_combined_name(catalog.combined_name(sampler, schedule))
        assert name == sampler and info.resolve_schedule(read) == info.resolve_schedule(schedule)
        fields = catalog.infotext_fields(sampler, schedule)
        name, read = catalog.split_combined_name(fields["Sampler"], fields.get("Schedule type"))
        assert name == sampler and info.resolve_schedule(read) == info.resolve_schedule(schedule)


def test_unknown_names_are_refused_with_the_closest_names():
    with pytest.raises(UnknownSamplerError) as sampler:
        catalog.split_combined_name("Eular a")
    assert sampler.value.suggestions[0] == "Euler a"
    assert "Did you mean 'Euler a'" in str(sampler.value)
    with pytest.raises(UnknownScheduleTypeError) as schedule:
        catalog.checked_choice("Euler", "Karas")
    assert schedule.value.suggestions[0] == "Karras"
    with pytest.raises(UnknownSamplerError) as nothing_close:
        catalog.sampler_named("zzzz")
    assert nothing_close.value.suggestions == ()


def test_a_schedule_type_the_sampler_cannot_use_is_refused():
    assert catalog.checked_choice("DPM++ 2M Karras") == ("DPM++ 2M", "Karras")
    assert catalog.checked_choice("DDIM") == ("DDIM", "Automatic")
    with pytest.raises(ScheduleNotAcceptedError, match="DDIM cannot use the schedule type 'Karras'"):
        catalog.checked_choice("DDIM", "Karras")
