"""A1111 1.10's noise (inference/noise.py): Philox, the three sources, slerp, seed resize, ENSD."""

import numpy as np
import pytest
import torch

from inference.noise import (
    ImageNoise,
    PhiloxNormalGenerator,
    SeededNoise,
    paste_centred,
    philox4x32_10,
    randn_local,
    slerp,
)

SHAPE = (4, 8, 10)

# Random123's known-answer vectors for philox4x32_10: (counter, key, output).
PHILOX_KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF,) * 4,
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


def cpu_randn(seed, shape):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("counter", "key", "expected"), PHILOX_KNOWN_ANSWERS)
def test_philox_known_answers(counter, key, expected):
    out = philox4x32_10(np.array(counter, dtype=np.uint32).reshape(4, 1), key)
    assert out.dtype == np.uint32
    assert tuple(int(word) for word in out[:, 0]) == expected


def test_philox_runs_every_column_on_its_own():
    counters = np.array([answer[0] for answer in PHILOX_KNOWN_ANSWERS[:2]], dtype=np.uint32).T
    out = philox4x32_10(counters, (0, 0))
    assert tuple(int(word) for word in out[:, 0]) == PHILOX_KNOWN_ANSWERS[0][2]
    alone = philox4x32_10(counters[:, 1:], (0, 0))
    assert np.array_equal(out[:, 1:], alone)


def test_nv_matches_the_values_a1111_publishes():
    # modules/rng_philox.py's docstring: Generator(seed=0).randn(shape=(3, 4)), which is
    # torch.randn on CUDA after manual_seed(0). A1111's numpy code itself lands within a few
    # float32 ulps of it (float64 Box-Muller against CUDA's float32 one).
    published = np.array(
        [
            [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
            [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
            [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
        ]
    )
    noise = PhiloxNormalGenerator(0).randn((3, 4))
    assert noise.dtype == np.float32 and noise.shape == (3, 4)
    np.testing.assert_allclose(noise, published, rtol=0, atol=1e-6)


# Bit patterns of float32 draws that A1111's rng_philox.Generator gives, obtained by running
# its code verbatim (numpy 2.4): (seed, draws before, first elements of the draw).
NV_EXACT = [
    (0, 0, (3, 4), (0xBF6CB6AD, 0xBED9C6AF, 0xC02934C5, 0x3E14AB15, 0xBDF788DC, 0xBF1468E7)),
    (0, 1, (3, 4), (0x3E392A6C, 0xBF0D6117, 0x3F6C7F09, 0xBF3C2704, 0x3FB0A3AA, 0x3F5E1D0C)),
    (2**32 + 5, 0, (2, 3), (0xC035EF93, 0x3FAB9541, 0x3E8B61D8, 0x3FBA3F80, 0xBF3C3C5D, 0xBF009422)),
    (3141592653, 0, (5,), (0x3EB5A190, 0xBFBA48B8, 0xBFE38742, 0x3F1395BC, 0x3EC4B962)),
]


@pytest.mark.parametrize(("seed", "draws_before", "shape", "bits"), NV_EXACT)
def test_nv_equals_a1111_bit_for_bit(seed, draws_before, shape, bits):
    generator = PhiloxNormalGenerator(seed)
    for _ in range(draws_before):
        generator.randn((7,))  # the offset moves by one per draw, whatever its size
    noise = generator.randn(shape)
    assert tuple(int(word) for word in noise.ravel().view(np.uint32)[: len(bits)]) == bits


def test_cpu_source_is_torch_cpu_generator_and_gpu_source_is_it_without_cuda():
    stream = SeededNoise("CPU", 1234)
    first, second = stream.randn(SHAPE), stream.randn(SHAPE)
    generator = torch.Generator().manual_seed(1234)
    assert torch.equal(first, torch.randn(SHAPE, generator=generator))
    assert torch.equal(second, torch.randn(SHAPE, generator=generator))
    assert torch.equal(SeededNoise("GPU", 1234, "cpu").randn(SHAPE), first)
    nv = SeededNoise("NV", 1234).randn(SHAPE)
    assert nv.dtype == torch.float32 and nv.shape == SHAPE
    assert torch.equal(randn_local("NV", 1234, SHAPE), nv)
    assert torch.equal(randn_local("CPU", 1234, SHAPE), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_source_first_draw_is_what_nv_imitates():
    gpu = SeededNoise("GPU", 0, "cuda").randn((4, 64, 64)).cpu()
    nv = SeededNoise("NV", 0).randn((4, 64, 64))
    torch.testing.assert_close(gpu, nv, rtol=0, atol=1e-5)


def test_unknown_source_is_refused():
    with pytest.raises(ValueError, match="'TPU'"):
        ImageNoise(SHAPE, [1], source="TPU")
    with pytest.raises(ValueError, match="latent"):
        ImageNoise((1, *SHAPE), [1], source="CPU")


def test_slerp_endpoints():
    low, high = cpu_randn(1, SHAPE), cpu_randn(2, SHAPE)
    assert torch.equal(slerp(0.0, low, high), low)
    torch.testing.assert_close(slerp(1.0, low, high), high)
    middle = slerp(0.5, low, high)
    assert not torch.allclose(middle, low) and not torch.allclose(middle, high)


def test_slerp_of_parallel_noise_is_linear_with_a1111s_swapped_weights():
    low = cpu_randn(3, SHAPE)
    # Every column of high parallel to low's: A1111 gives low * strength + high * (1 - strength).
    assert torch.equal(slerp(0.25, low, 2 * low), low * 0.25 + 2 * low * 0.75)
    torch.testing.assert_close(slerp(0.25, low, 2 * low), 1.75 * low)


def test_slerp_interpolates_each_column_along_the_height_on_its_own():
    low, high = cpu_randn(4, SHAPE), cpu_randn(5, SHAPE)
    whole = slerp(0.3, low, high)
    column = slerp(0.3, low[:, :, 2:3], high[:, :, 2:3])
    torch.testing.assert_close(whole[:, :, 2:3], column)


def test_initial_noise_is_each_seeds_draw_and_batches_do_not_mix():
    batch = ImageNoise(SHAPE, [5, 6], source="CPU").next()
    assert batch.shape == (2, *SHAPE) and batch.dtype == torch.float32
    assert torch.equal(batch[0], cpu_randn(5, SHAPE))
    assert torch.equal(batch[1], ImageNoise(SHAPE, [6], source="CPU").next()[0])


def test_sampler_noise_continues_each_images_generator():
    noise = ImageNoise(SHAPE, [5, 6], source="CPU")
    noise.next()
    later = noise.next()
    for index, seed in enumerate([5, 6]):
        generator = torch.Generator().manual_seed(seed)
        torch.randn(SHAPE, generator=generator)
        assert torch.equal(later[index], torch.randn(SHAPE, generator=generator))


@pytest.mark.parametrize("source", ["CPU", "NV"])
def test_ensd_changes_the_sampler_noise_only(source):
    plain = ImageNoise(SHAPE, [7, 8], source=source)
    delta = ImageNoise(SHAPE, [7, 8], source=source, eta_noise_seed_delta=31337)
    assert torch.equal(plain.next(), delta.next())
    plain_later, delta_later = plain.next(), delta.next()
    assert not torch.equal(plain_later, delta_later)
    # After the initial noise, the sampler draws from fresh generators of seed + ENSD.
    assert torch.equal(delta_later[1], SeededNoise(source, 8 + 31337).randn(SHAPE))
    assert torch.equal(delta.next()[0], _nth_draw(source, 7 + 31337, 2))


def _nth_draw(source, seed, n):
    stream = SeededNoise(source, seed)
    for _ in range(n - 1):
        stream.randn(SHAPE)
    return stream.randn(SHAPE)


def test_variation_strength_mixes_the_subseed_noise():
    seed_noise, subseed_noise = cpu_randn(10, SHAPE), cpu_randn(20, SHAPE)

    def initial(strength, subseeds=(20,)):
        return ImageNoise(SHAPE, [10], source="CPU", subseeds=subseeds, subseed_strength=strength).next()[0]

    assert torch.equal(initial(0.0), seed_noise)
    torch.testing.assert_close(initial(1.0), subseed_noise)
    assert torch.equal(initial(0.4), slerp(0.4, seed_noise, subseed_noise))
    # An image without a subseed of its own gets subseed 0, as in A1111.
    assert torch.equal(initial(0.4, subseeds=()), slerp(0.4, seed_noise, cpu_randn(0, SHAPE)))


def test_variation_leaves_the_sampler_noise_alone():
    mixed = ImageNoise(SHAPE, [10], source="NV", subseeds=[20], subseed_strength=0.5)
    plain = ImageNoise(SHAPE, [10], source="NV")
    mixed.next(), plain.next()
    assert torch.equal(mixed.next(), plain.next())


def test_seed_resize_pastes_the_from_size_noise_in_the_centre():
    # 48x32 pixels is a (4, 4, 6) latent, centred in (4, 8, 10) at rows 2..5, columns 2..7.
    noise = ImageNoise(SHAPE, [11], source="CPU", seed_resize_from=(48, 32))
    initial = noise.next()[0]
    assert initial.shape == SHAPE
    full = cpu_randn(11, SHAPE)
    assert torch.equal(initial[:, 2:6, 2:8], cpu_randn(11, (4, 4, 6)))
    outside = torch.ones(SHAPE, dtype=torch.bool)
    outside[:, 2:6, 2:8] = False
    assert torch.equal(initial[outside], full[outside])
    # The image's generator made the full-size draw, so the sampler's noise comes after it.
    assert torch.equal(noise.next()[0], _nth_draw("CPU", 11, 2))


def test_seed_resize_from_a_larger_size_keeps_its_centre():
    # 112x96 pixels is (4, 12, 14): its centre rows 2..9 and columns 2..11 fill the image.
    initial = ImageNoise(SHAPE, [12], source="NV", seed_resize_from=(112, 96)).next()[0]
    assert torch.equal(initial, SeededNoise("NV", 12).randn((4, 12, 14))[:, 2:10, 2:12])


def test_seed_resize_mixes_the_variation_at_the_from_size():
    initial = ImageNoise(
        SHAPE, [13], source="CPU", subseeds=[14], subseed_strength=0.3, seed_resize_from=(48, 32)
    ).next()[0]
    small = slerp(0.3, cpu_randn(13, (4, 4, 6)), cpu_randn(14, (4, 4, 6)))
    assert torch.equal(initial[:, 2:6, 2:8], small)


@pytest.mark.parametrize("resize", [(0, 0), (48, 0), (0, 32), (80, 64)])
def test_seed_resize_off_or_to_the_same_size_changes_nothing(resize):
    initial = ImageNoise(SHAPE, [15], source="CPU", seed_resize_from=resize).next()[0]
    assert torch.equal(initial, cpu_randn(15, SHAPE))


def test_paste_centred_puts_odd_differences_at_the_bottom_right():
    target = torch.zeros(1, 5, 9)
    paste_centred(target, torch.ones(1, 2, 6))
    assert target[0].nonzero().min(0).values.tolist() == [1, 1]
    assert target[0].nonzero().max(0).values.tolist() == [2, 6]


def test_no_global_random_state_is_touched():
    before = torch.random.get_rng_state()
    for source in ("GPU", "CPU", "NV"):
        noise = ImageNoise(SHAPE, [1, 2], source=source, subseeds=[3, 4], subseed_strength=0.5, eta_noise_seed_delta=9)
        noise.next(), noise.next()
    assert torch.equal(before, torch.random.get_rng_state())


def test_slerp_keeps_a1111s_nan_where_one_pixel_high_noise_agrees_in_sign():
    low = torch.tensor([[[1.0, -2.0, 3.0]]])
    high = torch.tensor([[[2.0, 1.0, -1.0]]])
    mixed = slerp(0.5, low, high)
    assert mixed[0, 0, 0].isnan() and not mixed[0, 0, 1:].isnan().any()
