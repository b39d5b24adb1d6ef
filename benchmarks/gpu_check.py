"""The core on a GPU, without Ray: training and embedding throughput, nvJPEG, peak memory.

One short script for a machine that has torch, torchvision and timm but no Ray (the lent GPU
machine): it times what the thesis's setting needs and prints one table with the goals.

- training img/s of EfficientNet-B0 and EfficientNet-Lite0 (SupCon step + AdamW) at 256 px,
  bf16 autocast, channels_last, batch 186;
- embedding img/s, model only (bf16, channels_last, inference mode);
- embedding img/s from JPEG bytes: nvJPEG batch decode, resize, model (the Serve encoder's path);
- peak GPU memory of one training step at batch 186 on the micro-batch path (GradCache);
- the CUDA unit tests (``tests/data/test_preprocess.py``) when pytest is there.

    python benchmarks/gpu_check.py                 # on the GPU (a few minutes)
    python benchmarks/gpu_check.py --smoke         # CPU, tiny sizes: the script's own check

Anchors: NVIDIA's A100 EfficientNet-B0 AMP figures, 2,489 img/s training at 224 px and 10,239
img/s inference. Goals on one H100-class GPU: >= 4,000 img/s training, >= 12,000 img/s
embedding model-only, >= 8,000 img/s from JPEG bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: synthray

log = logging.getLogger("gpu_check")
GOALS = {"train": 4000.0, "embed_model": 12000.0, "embed_jpeg": 8000.0}


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: Any, warmup: int, repeats: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` calls (the median of ``repeats`` timings)."""
    import statistics

    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def encoder(backbone: str, device: Any, channels_last: bool) -> Any:
    import torch

    from synthray.models import EncoderConfig, build_encoder

    model = build_encoder(EncoderConfig(backbone=backbone, embedding_dim=128)).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def train_rate(backbone: str, device: Any, args: argparse.Namespace, amp: Any) -> dict[str, Any]:
    """Images per second of full SupCon training steps (forward, loss, backward, AdamW)."""
    import torch

    from synthray.losses import LossConfig, build_loss
    from synthray.train.step import supcon_step

    model = encoder(backbone, device, args.channels_last).train()
    loss_fn = build_loss(LossConfig())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n, r = args.batch, args.resolution
    images = torch.rand(n, 3, r, r, device=device)
    if args.channels_last:
        images = images.to(memory_format=torch.channels_last)
    labels = torch.arange(n, device=device) % max(2, n // 4)

    def step(micro: int | None = None) -> None:
        opt.zero_grad(set_to_none=True)
        supcon_step(model, loss_fn, images, labels, micro_batch_size=micro, amp_dtype=amp)
        opt.step()

    seconds = timed(step, device, args.warmup, args.repeats)
    out: dict[str, Any] = {"img_s": n / seconds}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step(args.micro_batch)
        sync(device)
        out["peak_gib_micro"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def embed_rate(backbone: str, device: Any, args: argparse.Namespace, amp: Any) -> float:
    """Images per second of the encoder alone (inference mode)."""
    import torch

    from synthray.train.step import autocast_context

    model = encoder(backbone, device, args.channels_last).eval()
    x = torch.rand(args.embed_batch, 3, args.resolution, args.resolution, device=device)
    if args.channels_last:
        x = x.to(memory_format=torch.channels_last)

    def run() -> None:
        with torch.inference_mode(), autocast_context(device, amp):
            model(x)

    return args.embed_batch / timed(run, device, args.warmup, args.repeats)


def jpeg_bytes(count: int, side: int) -> list[bytes]:
    """``count`` JPEGs of ``side`` px cut from scikit-learn's sample photographs."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images
    rng = np.random.default_rng(0)
    out = []
    for i in range(count):
        photo = photos[i % len(photos)]
        y, x = rng.integers(0, photo.shape[0] - side), rng.integers(0, photo.shape[1] - side)
        buf = io.BytesIO()
        Image.fromarray(photo[y : y + side, x : x + side]).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def jpeg_rate(backbone: str, device: Any, args: argparse.Namespace, amp: Any) -> float:
    """Images per second from JPEG bytes to embeddings: the Preprocessor (nvJPEG on CUDA) + model."""
    import torch

    from synthray.config import PreprocessConfig
    from synthray.data.preprocess import Preprocessor
    from synthray.train.step import autocast_context

    model = encoder(backbone, device, args.channels_last).eval()
    pre = Preprocessor(
        PreprocessConfig(resolution=args.resolution, device=str(device), channels_last=args.channels_last)
    )
    data = jpeg_bytes(args.embed_batch, args.resolution)

    def run() -> None:
        with torch.inference_mode(), autocast_context(device, amp):
            model(pre(data))

    return args.embed_batch / timed(run, device, args.warmup, args.repeats)


def cuda_tests() -> str:
    """The CUDA unit tests' pytest summary, or why they did not run."""
    try:
        import pytest  # noqa: F401
    except ImportError:
        return "pytest not installed"
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(root / "tests" / "data" / "test_preprocess.py"),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=600,
    )
    return (proc.stdout.strip().splitlines() or ["no output"])[-1]


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| measure | backbone | img/s | goal | peak GiB (micro-batch) |", "|---|---|---|---|---|"]
    for r in rows:
        goal = f"{GOALS[r['measure']]:,.0f}" if r["measure"] in GOALS else ""
        peak = f"{r['peak_gib_micro']:.1f}" if r.get("peak_gib_micro") is not None else ""
        lines.append(f"| {r['measure']} | {r['backbone']} | {r['img_s']:,.0f} | {goal} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny sizes (checks the script, measures nothing)")
    parser.add_argument("--device", default=None, help="cuda | cpu (default: cuda, cpu with --smoke)")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch", type=int, default=186, help="training batch (the thesis's)")
    parser.add_argument("--micro-batch", type=int, default=62, help="rows per forward pass on the micro-batch path")
    parser.add_argument("--embed-batch", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_b0", "tf_efficientnet_lite0"])
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--no-tests", dest="tests", action="store_false", help="skip the CUDA unit tests")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.smoke:
        args.resolution, args.batch, args.micro_batch, args.embed_batch = 32, 8, 4, 8
        args.warmup, args.repeats, args.tests = 1, 1, False
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on the GPU machine, or --smoke on a CPU")
    amp = torch.bfloat16 if device.type == "cuda" else None
    torch.backends.cudnn.benchmark = device.type == "cuda"
    info = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "resolution": args.resolution,
        "batch": args.batch,
        "micro_batch": args.micro_batch,
        "embed_batch": args.embed_batch,
        "amp": "bf16" if amp is not None else "none",
        "channels_last": args.channels_last,
    }
    log.info("%s", info)
    rows = []
    for backbone in args.backbones:
        rows.append({"measure": "train", "backbone": backbone, **train_rate(backbone, device, args, amp)})
        rows.append({"measure": "embed_model", "backbone": backbone, "img_s": embed_rate(backbone, device, args, amp)})
        rows.append({"measure": "embed_jpeg", "backbone": backbone, "img_s": jpeg_rate(backbone, device, args, amp)})
        log.info("%s done", backbone)
    result = {"info": info, "rows": rows, "cuda_tests": cuda_tests() if args.tests else "skipped"}
    print(json.dumps(info))
    print(table(rows))
    print(f"CUDA unit tests: {result['cuda_tests']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
