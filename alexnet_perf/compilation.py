"""torch.compile for the training step, with the CPU rewrites that keep it at least as fast as eager.

Outside the convolutions (oneDNN's, the same calls as eager's but for the last rewrite) a CPU step is BatchNorm, ReLU
and max-pool, bound by memory traffic, and inductor's stock handling of two of them moves more bytes than eager's
kernels:
- max-pool's stock backward is a scatter_add over an fp32 NCHW copy of the gradient, and inductor's lowering turns
  the saved int8 window offsets back into int64 indices lane by lane. For the network's pools (2x2, stride 2, no
  padding: windows that do not overlap) the rewrites below express the indices with int8 and int32 vector
  arithmetic, and write the backward as one elementwise select that forms no index at all: it finds each window's
  offset again from the pool's input and compares it, as a float, with each input's place in its window (int64
  vectors are slow in inductor's CPU code: 2.3-3.8 ms against 0.5 to un-pool the first block). Exactly aten's
  values, indices and gradients (ties and NaN included); other pools keep inductor's gather-style lowering.
- BatchNorm's stock backward stores an fp32 copy of each bf16 layer gradient; the rewrite reads the bf16 gradient
  directly.
- BatchNorm's stock training forward takes mean and variance in one Welford pass, a division per element; the
  rewrite sums twice (mean, then squared deviations from it), plain vector adds, as exact.
Inductor fuses all of them into the neighbouring BatchNorm and ReLU kernels. On CPUs with AMX, one rewrite changes a
convolution call:
- oneDNN's AMX convolution backward (its weight gradient) spends its time per image on small maps; for maps of 8×8
  or less (the last three layers) the rewrite runs it on the images tiled into larger maps, zero gaps as wide as the
  padding, which keeps every sum's terms (their order is oneDNN's). With AVX-512 BF16 and no AMX (an AMD EPYC) the
  tiled backward was slower than the plain one, and the step with it no faster than eager (tiles_small_maps).

Compiled graphs are kept in torch's persistent caches (AOTAutograd's and inductor's, under
$TORCHINDUCTOR_CACHE_DIR, by default in the system's temporary folder), so that a later run of the same shapes
loads them instead of compiling again. The rewrites enter those caches' keys twice: the table pickles as the digest
of this file, and the keys carry a tag naming it, so a stock compile never loads a rewritten graph, nor the reverse.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .device import cpu_has_amx

aten = torch.ops.aten
POOL = aten.max_pool2d_with_indices.default
POOL_BACKWARD = aten.max_pool2d_with_indices_backward.default
BATCH_NORM = aten._native_batch_norm_legit_functional.default
BATCH_NORM_BACKWARD = aten.native_batch_norm_backward.default
CONVOLUTION_BACKWARD = aten.convolution_backward.default
TILED_MAX_SIDE = 8  # convolutions on maps up to this side have their backward run on tiled images,
TILED_MIN_SIDE = 16  # maps at least this wide (oneDNN measured: 2×2 images of 8×8 and 4×4 of 6×6 were fastest)
REWRITES_DIGEST = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]  # changes with the rewrites' code


def _pairs(value: int | Sequence[int], default: Sequence[int]) -> list[int]:
    value = [value] if isinstance(value, int) else list(value) or list(default)
    return value * 2 if len(value) == 1 else value


def _is_2x2_tiling(x: torch.Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any) -> bool:
    """A 2x2, stride-2, unpadded pool over an even-sized NCHW map: each input is in exactly one window."""
    kernel = _pairs(kernel_size, ())
    return (x.dim() == 4 and kernel == [2, 2] and _pairs(stride, kernel) == [2, 2]
            and _pairs(padding, [0]) == [0, 0] and _pairs(dilation, [1]) == [1, 1]
            and x.shape[-2] % 2 == 0 and x.shape[-1] % 2 == 0)


def _window_corners(x: torch.Tensor) -> torch.Tensor:
    """Flat index (h * W + w) of each window's top-left input: the base aten's pool indices count from."""
    height, width = x.shape[-2:]
    rows = torch.arange(height // 2, dtype=torch.int32, device=x.device) * (2 * width)
    return rows.view(-1, 1) + torch.arange(width // 2, dtype=torch.int32, device=x.device).view(1, -1) * 2


def _pool_2x2(default: Callable, pool_with_offsets: Callable) -> Callable:
    def pool(x: torch.Tensor, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1,
             ceil_mode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        if not _is_2x2_tiling(x, kernel_size, stride, padding, dilation):
            return default(x, kernel_size, stride, padding, dilation, ceil_mode)
        values, offsets = pool_with_offsets(x, [2, 2], [2, 2], [0, 0], [1, 1], ceil_mode)
        # offset = 2 * row + column within the window, so the input's flat index is corner + row * W + column =
        # corner + offset + row * (W - 2). Computed in int32 and widened last: torch's CPU vector code converts
        # int8 to int64 one lane at a time (int8 to int32 to int64 is vectorised). The backward below never reads
        # these indices, so a training graph does not compute them.
        local = offsets.to(torch.int32)
        local = torch.where(local >= 2, local + (x.shape[-1] - 2), local)
        return values, (_window_corners(x) + local).to(torch.int64)
    return pool


def _pool_2x2_backward(pool_with_offsets: Callable) -> Callable:
    def backward(grad: torch.Tensor, x: torch.Tensor, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
                 ceil_mode: bool, indices: torch.Tensor) -> torch.Tensor:
        if not _is_2x2_tiling(x, kernel_size, stride, padding, dilation):
            return NotImplemented
        n, c, height, width = x.shape

        def upsample(t: torch.Tensor) -> torch.Tensor:
            return t[:, :, :, None, :, None].expand(n, c, height // 2, 2, width // 2, 2).reshape(n, c, height, width)

        _, offsets = pool_with_offsets(x, [2, 2], [2, 2], [0, 0], [1, 1], ceil_mode)  # the forward's, from its input
        rows, cols = (torch.arange(size, device=x.device) % 2 for size in (height, width))
        place = (2 * rows.view(-1, 1) + cols.view(1, -1)).float()  # offset = 2 * row + column within the window
        layout = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        return torch.where(upsample(offsets).float() == place, upsample(grad), 0).contiguous(memory_format=layout)
    return backward


def _batch_norm_two_pass(default: Callable) -> Callable:
    """Training BatchNorm's forward with the batch statistics from two sums over each channel (the mean, then the
    squared deviations from it) instead of the stock decomposition's Welford reduction, whose division per element
    inductor's CPU kernels pay for every activation; outputs, saved statistics and running statistics as the stock
    decomposition gives them. Other cases keep it."""
    def forward(input: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                running_mean: torch.Tensor, running_var: torch.Tensor, training: bool, momentum: float,
                eps: float) -> tuple[torch.Tensor, ...]:
        if not (training and input.dim() == 4 and weight is not None and bias is not None):
            return default(input, weight, bias, running_mean, running_var, training, momentum, eps)
        shape, dims = (1, -1, 1, 1), [0, 2, 3]
        count = input.numel() // input.shape[1]
        x = input.float()
        mean = torch.sum(x, dims) / count
        centred = x - mean.view(shape)
        variance = torch.sum(centred * centred, dims) / count
        invstd = torch.rsqrt(variance + eps)
        output = centred * (invstd * weight).view(shape) + bias.view(shape)
        saved_dtype = input.dtype if input.device.type == "cpu" else mean.dtype  # as the stock decomposition
        return (output.to(input.dtype), mean.to(saved_dtype), invstd.to(saved_dtype),
                momentum * mean + (1 - momentum) * running_mean,
                momentum * variance * (count / (count - 1)) + (1 - momentum) * running_var)
    return forward


def _batch_norm_backward_low_precision(default: Callable) -> Callable:
    """Training BatchNorm's backward for a bf16/fp16 gradient, computed in fp32 like the stock decomposition, but
    with the gradient read as is by its three users (two channel sums and the input gradient): the stock version
    casts it to fp32 first, and inductor then stores that fp32 copy of a layer's whole gradient (twice the bytes
    eager moves) and reads it twice more. Other cases keep the stock decomposition."""
    def backward(grad_out: torch.Tensor, input: torch.Tensor, weight: torch.Tensor | None, running_mean: Any,
                 running_var: Any, save_mean: torch.Tensor, save_invstd: torch.Tensor, train: bool, eps: float,
                 output_mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
        if not (train and input.dim() == 4 and grad_out.dtype in (torch.bfloat16, torch.float16)
                and weight is not None):
            return default(grad_out, input, weight, running_mean, running_var, save_mean, save_invstd, train, eps,
                           output_mask)
        shape, dims = (1, -1, 1, 1), [0, 2, 3]
        count = grad_out.numel() // grad_out.shape[1]
        centred = input.float() - save_mean.view(shape)
        grad_sum = torch.sum(grad_out, dims, dtype=torch.float32)
        dot = torch.sum(grad_out * centred, dims)
        projection = centred * (dot / count * save_invstd * save_invstd).view(shape)
        grad_input = (grad_out - projection - (grad_sum / count).view(shape)) * (save_invstd * weight).view(shape)
        return (grad_input.to(input.dtype) if output_mask[0] else None,
                (dot * save_invstd).to(weight.dtype) if output_mask[1] else None,
                grad_sum.to(weight.dtype) if output_mask[2] else None)
    return backward


def _tile(x: torch.Tensor, per_row: int, gap: int) -> torch.Tensor:
    """(N, C, H, W) → (N / per_row², C, per_row·(H + gap) − gap, ...): per_row² images to a map, `gap` zero
    pixels apart."""
    n, c, h, w = x.shape
    x = torch.constant_pad_nd(x, [0, gap, 0, gap]).view(n // per_row ** 2, per_row, per_row, c, h + gap, w + gap)
    x = x.permute(0, 3, 1, 4, 2, 5).reshape(n // per_row ** 2, c, per_row * (h + gap), per_row * (w + gap))
    x = x[:, :, :per_row * (h + gap) - gap, :per_row * (w + gap) - gap]
    return x.contiguous(memory_format=torch.channels_last)


def _untile(x: torch.Tensor, per_row: int, gap: int) -> torch.Tensor:
    """_tile's inverse (what lies in the gaps is dropped)."""
    tiles, c, tiled_h, tiled_w = x.shape
    h, w = (tiled_h + gap) // per_row - gap, (tiled_w + gap) // per_row - gap
    x = torch.constant_pad_nd(x, [0, gap, 0, gap]).view(tiles, c, per_row, h + gap, per_row, w + gap)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(tiles * per_row ** 2, c, h + gap, w + gap)[:, :, :h, :w]


def _convolution_backward_tiled(grad_output: torch.Tensor, input: torch.Tensor, weight: torch.Tensor,
                                bias_sizes: Any, stride: Sequence[int], padding: Sequence[int],
                                dilation: Sequence[int], transposed: bool, output_padding: Sequence[int],
                                groups: int, output_mask: list[bool]) -> Any:
    """A convolution's backward on maps of at most TILED_MAX_SIDE pixels a side (the network's last three: 8×8 at
    32×32 inputs, 6×6 at 24×24) run on the images tiled into maps at least TILED_MIN_SIDE wide (2×2 images of 8×8,
    4×4 of 6×6), the gaps as wide as the padding: oneDNN's weight gradient for small maps spends its time per image
    (the 128→128 layer's backward at batch 128: 3.2 against 5.2 ms at 8×8, 2.0 against 4.2 at 6×6). The zero gaps
    are the padding each image sees: every sum has aten's terms, in the order oneDNN picks for the map's size. Other
    convolutions keep aten's backward (NotImplemented), the tiled call among them."""
    k = weight.shape[-1]
    gap, per_row = k // 2, 2
    if not (input.dim() == 4 and not transposed and groups == 1 and list(stride) == [1, 1]
            and list(dilation) == [1, 1] and k % 2 == 1 and list(weight.shape[-2:]) == [k, k]
            and list(padding) == [gap, gap] and 0 < min(input.shape[-2:]) and max(input.shape[-2:]) <= TILED_MAX_SIDE):
        return NotImplemented
    while per_row * (min(input.shape[-2:]) + gap) - gap < TILED_MIN_SIDE:
        per_row *= 2
    if input.shape[0] % per_row ** 2:
        return NotImplemented
    grad_input, grad_weight, grad_bias = aten.convolution_backward.default(
        _tile(grad_output, per_row, gap), _tile(input, per_row, gap), weight, bias_sizes, stride, padding, dilation,
        transposed, output_padding, groups, output_mask)
    return _untile(grad_input, per_row, gap) if output_mask[0] else None, grad_weight, grad_bias


def warm_compiler_keys() -> threading.Thread | None:
    """Start computing, on a thread, the key of the triton build that torch's compile caches hash into every key
    once a process, CPU code included: a sha256 of triton's 480 MB library (0.4 s here). Started as a run begins,
    it runs beside the data loading and the network's building, and the first compile finds it done. The started
    thread; None where triton is not installed. A failure is left for torch's own call to meet."""
    try:
        from triton.runtime.cache import triton_key
    except ImportError:
        try:
            from triton.compiler.compiler import triton_key  # older triton, where torch also looks
        except ImportError:
            return None

    def compute() -> None:
        try:
            triton_key()
        except Exception:  # noqa: BLE001 - torch's call raises it again, where torch handles it
            pass

    thread = threading.Thread(target=compute, name="triton-key", daemon=True)
    thread.start()
    return thread


def fallback_notice(reason: BaseException) -> None:
    """The one line --compile prints when the CPU rewrites cannot be used and stock inductor compiles instead."""
    print(f"--compile: inductor's CPU rewrites do not apply with torch {torch.__version__} "
          f"({type(reason).__name__}: {(str(reason).splitlines() or [''])[0][:160]}); compiling with stock inductor",
          file=sys.stderr, flush=True)


def tiles_small_maps() -> bool:
    """Whether the rewrites run small maps' convolution backward on tiled images: on CPUs with AMX, where it made
    the compiled step faster (24.3 against 28.6 ms at 24×24, batch 128, on a Xeon). On an AMD EPYC with AVX-512
    BF16 and no AMX the compiled step with it took 52.1 ms at 24×24 and 82.1 at 32×32, without it 47.3 and 78.8
    (eager 51.7 and 82.8): there oneDNN's plain backward is the faster one."""
    return cpu_has_amx()


def rewrites_digest(tiled: bool) -> str:
    """The rewrites' digest, marked when the table tiles small maps' convolution backward."""
    return REWRITES_DIGEST + ("-tiled" if tiled else "")


class RewriteTable(dict):
    """Inductor's decomposition table with the rewrites. Inductor hashes the table into its graph cache key, and
    its functions do not pickle; the table pickles as the digest of the rewrites instead."""

    def __init__(self, table: dict, tiled: bool) -> None:
        super().__init__(table)
        self.tiled = tiled

    def __reduce__(self) -> tuple[Callable, tuple[str, bool]]:
        return rewrite_table, (rewrites_digest(self.tiled), self.tiled)


def rewrite_table(digest: str = REWRITES_DIGEST, tiled: bool | None = None) -> RewriteTable:
    """Inductor's decomposition table with the rewrites above (digest: what the table pickles as; tiled: whether
    it tiles small maps' convolution backward, by default where tiles_small_maps says)."""
    from torch._inductor.decomposition import select_decomp_table
    from torch._inductor.inductor_prims import _low_memory_max_pool_with_offsets

    tiled = tiles_small_maps() if tiled is None else tiled
    table = RewriteTable(select_decomp_table(), tiled)
    table[POOL] = _pool_2x2(table[POOL], _low_memory_max_pool_with_offsets)
    table[POOL_BACKWARD] = _pool_2x2_backward(_low_memory_max_pool_with_offsets)
    table[BATCH_NORM] = _batch_norm_two_pass(table[BATCH_NORM])
    table[BATCH_NORM_BACKWARD] = _batch_norm_backward_low_precision(table[BATCH_NORM_BACKWARD])
    if tiled:
        table[CONVOLUTION_BACKWARD] = _convolution_backward_tiled
    return table


def cache_key_tag(tiled: bool) -> str:
    """torch.compiler's cache key tag while a graph is compiled with the rewrites: whatever tag the user set, and
    the rewrites' digest. AOTAutograd keys its cache on the graph before decomposition, so without the tag a stock
    compile of the same graph and a rewritten one (or one with the tiled backward and one without) would share
    entries."""
    return "+".join(filter(None, (torch.compiler.config.cache_key_tag,
                                  f"alexnet_perf-rewrites-{rewrites_digest(tiled)}")))


@functools.cache
def _inductor_with_cpu_rewrites(tiled: bool) -> Callable:
    """Inductor with the rewrites above in its decomposition table (tiled: rewrite_table's), its compiled graphs kept
    in torch's caches under the rewrites' tag. One backend per table for the whole process: dynamo keeps a function's
    graphs with the backend that compiled them, and a new backend for each run (a sweep calling train() run after
    run) recompiled every graph and, past dynamo's limit of 8 graphs per function, ran the rest eagerly.
    If compiling with the rewrites fails when a graph is first compiled (inductor internals that moved), that graph
    and every later one are compiled by stock inductor, after one line saying so."""
    from torch._inductor.compile_fx import compile_fx

    table = rewrite_table(tiled=tiled)
    failed: list[BaseException] = []

    def backend(gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        if not failed:
            with warnings.catch_warnings(record=True) as caught:  # a failed attempt's warnings are not the user's
                warnings.simplefilter("always")
                try:
                    with torch.compiler.config.patch(cache_key_tag=cache_key_tag(table.tiled)):
                        compiled = compile_fx(gm, example_inputs, decompositions=table)
                except Exception as e:  # noqa: BLE001 - any failure of the rewrites falls back to stock inductor
                    failed.append(e)
            if not failed:
                for w in caught:
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
                return compiled
            fallback_notice(failed[0])
        return compile_fx(gm, example_inputs)

    return backend


def compile_network(model: nn.Module, device: torch.device, mode: str | None = None) -> nn.Module:
    """torch.compile for training: on a CPU with the rewrites (above), elsewhere as is, in torch.compile's mode
    (on a GPU: reduce-overhead records CUDA graphs; the CPU compile has its one mode). The rewrites use inductor
    internals; where those differ (another torch version), stock inductor is used, and a line says so.
    Shapes stay static (dynamic=False): a run sees at most two input sizes (low-resolution first epochs, then
    32×32), and each gets its own graph with kernels specialised to it, where torch's default would recompile the
    second size into one shape-generic graph with slower kernels."""
    if device.type == "cpu":
        try:
            return torch.compile(model, backend=_inductor_with_cpu_rewrites(tiles_small_maps()), dynamic=False)
        except (ImportError, AttributeError, KeyError) as e:
            fallback_notice(e)
        return torch.compile(model, dynamic=False)
    return torch.compile(model, dynamic=False, mode=mode)
