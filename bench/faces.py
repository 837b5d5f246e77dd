"""Benchmark: face restoration (A1111's "Restore faces") against the bare restorer call.

The restorers are GFPGAN and CodeFormer in their real architectures with random weights, and
the detector is RetinaFace-ResNet50 with its heads planted so that it finds one face in any
image (tests/face_fixtures.py), so every path does the same work a real photo with one face
costs. The restorers' work does not depend on the image: they always run at 512 px.

- ``bare``: the restorer's module called once on a 512 x 512 tensor, as A1111 calls it.
- ``detect``: the detector alone (the image at 640 px on its shorter side, decoding, NMS).
- ``restore``: ``FaceRestorers.restore`` on the image, as a job runs it: detection, alignment,
  the restorer, the inverse warp and the soft-mask paste-back, PIL in and out.

    python -m bench.faces                       # CPU: 512 px image, one call per path
    python -m bench.faces --device cuda         # a GPU: 5 calls per path
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import common

PATHS = ("bare", "detect", "restore")
RESTORERS = ("GFPGAN", "CodeFormer")


def parse_args(argv: list[str] | None):
    parser = common.base_parser("faces", __doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="the image's side in pixels (default 512)")
    parser.add_argument("--restorer", choices=(*RESTORERS, "both"), default="both")
    parser.add_argument("--dtype", help="float16, bfloat16 or float32 (default: float16 on cuda, float32 on cpu)")
    parser.add_argument("--repeats", type=int, help="timed calls per path (default 5 on cuda, 1 on cpu)")
    args = parser.parse_args(argv)
    common.fill_device_defaults(args, cuda_repeats=5, cpu_repeats=1)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    import numpy as np
    import torch
    from PIL import Image

    from inference.common.protocol import RestoreFacesOptions
    from inference.faces import retinaface
    from inference.faces.restore import FaceRestorers
    from tests.face_fixtures import write_face_models

    device, dtype = common.torch_device(args)
    folder = tempfile.TemporaryDirectory(prefix="sdbot-bench-faces-")
    names = RESTORERS if args.restorer == "both" else (args.restorer,)
    dirs = write_face_models(Path(folder.name), restorers=names, detection_scale=args.size / retinaface.DETECTION_SIDE)
    restorers = FaceRestorers(dirs, device, dtype)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
    face = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)) * 2 - 1
    memory = common.PeakMemory(device)

    def synced(result: Any) -> Any:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return result

    results: dict[str, Any] = {"memory_kind": memory.kind}
    rows = []
    for name in names:
        options = RestoreFacesOptions(name)
        restorers.restore(image, options)  # warm-up: loads the detector and this restorer
        model = restorers._load_restorer(name)
        detector = restorers._load_detector()
        extra = {"weight": options.codeformer_weight, "adain": True} if name == "CodeFormer" else {"return_rgb": False}

        @torch.inference_mode()
        def bare() -> Any:
            return synced(model.model(face.to(model.device, model.dtype), **extra)[0])

        calls = {
            "bare": bare,
            "detect": lambda: synced(retinaface.detect_faces(detector, image)),
            "restore": lambda: restorers.restore(image, options),
        }
        timings, peaks, outcomes = common.time_paths(calls, args.repeats, memory, warm_up=device.type == "cuda")
        assert outcomes["restore"].faces == 1, "the planted detector finds one face"
        results[name], medians = common.against_baseline(timings, peaks, "x_bare")
        for path in PATHS:
            rows.append([name, path, medians[path], results[name][path]["x_bare"], common.mib(peaks[path])])
    settings = {
        "restorers": list(names), "image": f"{args.size}x{args.size}", "faces": 1,
        "dtype": str(model.dtype).removeprefix("torch."), "repeats": args.repeats,
        "models": "GFPGANv1.4 / CodeFormer v0.1.0 architectures and RetinaFace-ResNet50, random weights",
    }
    common.write_result("faces", args.device, settings, results, args.output_dir)
    common.print_table(
        f"faces: one face in a {args.size} px image, {settings['dtype']} on {args.device} (median of {args.repeats})",
        ["restorer", "path", "s/call", "x bare", f"peak MiB ({results['memory_kind']})"],
        rows,
    )
    folder.cleanup()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
