"""GPU scenarios of compressed CPU backups: ``python compress_scenarios.py NAME HOOK_MODE``.

Run by test_compress_gpu.py, each in a fresh process (preload mode with the
library in LD_PRELOAD); a scenario passes when it returns, and the runner
prints SCENARIO OK.
"""

import ctypes
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import torch
import torch_memory_saver as tms_package
from torch_memory_saver import _library, _settings, stats
from torch_memory_saver._policy import BackupPolicy
from torch_memory_saver import torch_memory_saver as tms

MIB = 2**20
GIB = 2**30


def free_bytes():
    torch.cuda.synchronize()
    return torch.cuda.mem_get_info()[0]


def backup_bytes(tag):
    return sum(s.backup_bytes for s in stats() if s.tag == tag)


def bits(tensor):
    """The tensor's bytes as int16 words (or bytes), for bit-exact comparison (NaN == NaN)."""
    flat = tensor.reshape(-1)
    return flat.view(torch.int16) if flat.element_size() == 2 else flat.view(torch.uint8)


class _DeviceBytes:
    """`size` bytes of device memory at `address`, for torch.as_tensor."""

    def __init__(self, address, size):
        self.__cuda_array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (address, False), "version": 3}


def device_bytes(address, size):
    return torch.as_tensor(_DeviceBytes(address, size), device="cuda")


def mixed_tensors(generator):
    """What a codec can get wrong: weights of both 16-bit types, every bf16 bit
    pattern (NaNs, infinities, denormals), random bytes, odd sizes, one element."""
    every_word = torch.arange(-(2**15), 2**15, dtype=torch.int32, device="cuda").to(torch.int16)
    shuffled = every_word[torch.randperm(every_word.numel(), device="cuda", generator=generator)]
    return {
        "bf16_weights": (torch.randn(150 * MIB, device="cuda", generator=generator) * 0.02).to(torch.bfloat16),
        "fp16_weights": (torch.randn(24 * MIB + 3, device="cuda", generator=generator) * 0.02).to(torch.float16),
        "every_word": torch.cat([every_word, shuffled, every_word.repeat_interleave(9)]).view(torch.bfloat16),
        "random_bytes": torch.randint(0, 256, (33 * MIB + 7,), dtype=torch.uint8, device="cuda", generator=generator),
        "nan_bf16": torch.full((5 * MIB + 1,), float("nan"), dtype=torch.bfloat16, device="cuda"),
        "one_element": torch.ones(1, dtype=torch.bfloat16, device="cuda"),
    }


def in_region(tag, sources):
    """Copies of `sources` in a compressed region. Only the empty tensors are
    made inside it, so no temporary of the generation is cached in its pool."""
    with tms.region(tag, enable_cpu_backup=True, compress=True):
        tensors = {name: torch.empty_like(t) for name, t in sources.items()}
    for name, tensor in tensors.items():
        tensor.copy_(sources[name])
    return tensors


def cycles_exact():
    """20 pause/resume cycles: contents bit-exact, memory released, weights held in < 0.75 of their size."""
    generator = torch.Generator(device="cuda").manual_seed(1)
    sources = mixed_tensors(generator)
    tensors = in_region("packed", sources)
    expected = {name: bits(t).clone() for name, t in sources.items()}
    del sources
    pointers = {name: t.data_ptr() for name, t in tensors.items()}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    weights = sum(tensors[n].numel() * 2 for n in ("bf16_weights", "fp16_weights"))
    for cycle in range(20):
        active = free_bytes()
        tms.pause("packed")
        assert free_bytes() - active >= 0.9 * total, "pause did not release the memory"
        held = backup_bytes("packed")
        assert held < 0.75 * weights + (total - weights) * 1.001 + 8 * MIB, f"host bytes {held} of {total}"
        tms.resume("packed")
        for name, tensor in tensors.items():
            assert tensor.data_ptr() == pointers[name]
            assert torch.equal(bits(tensor), expected[name]), f"cycle {cycle}: {name} differs"
        tensors["bf16_weights"].add_(1e-3)  # contents change between cycles, as in training
        expected["bf16_weights"] = bits(tensors["bf16_weights"]).clone()
    print(f"cycles_exact host bytes {held} of {total} ({held / total:.3f})")


def same_sizes_as_the_cpu_codec():
    """The kernels choose per chunk exactly as the CPU reference codec does: same stored size."""
    generator = torch.Generator(device="cuda").manual_seed(2)
    tensors = mixed_tensors(generator)
    lib = _library.library()
    allocations = []
    with _settings.changed(tag="sized", policy=BackupPolicy("host_compressed")):
        for tensor in tensors.values():
            size = tensor.numel() * tensor.element_size()
            address = ctypes.c_void_p()
            _library.check(lib.tms_malloc(ctypes.byref(address), size, torch.cuda.current_device()))
            allocations.append(address.value)
            device_bytes(address.value, size).copy_(bits(tensor).view(torch.uint8))
    tms.pause("sized")
    gpu_total = backup_bytes("sized")
    tms.resume("sized")
    for address, tensor in zip(allocations, tensors.values()):
        size = tensor.numel() * tensor.element_size()
        assert torch.equal(device_bytes(address, size), bits(tensor).view(torch.uint8)), "contents differ"
        _library.check(lib.tms_free(ctypes.c_void_p(address)))
    with tempfile.TemporaryDirectory() as directory:
        paths = []
        for name, tensor in tensors.items():
            path = Path(directory) / f"{name}.bin"
            host = bits(tensor).view(torch.uint8).cpu()
            path.write_bytes(ctypes.string_at(host.data_ptr(), host.numel()))
            paths.append(str(path))
        script = """
import ctypes, json, sys
from torch_memory_saver import _library, _settings, stats, torch_memory_saver as tms
from torch_memory_saver._policy import BackupPolicy
lib = _library.library()
with _settings.changed(tag="sized", policy=BackupPolicy("host_compressed")):
    for path in json.loads(sys.argv[1]):
        data = open(path, "rb").read()
        address = ctypes.c_void_p()
        _library.check(lib.tms_malloc(ctypes.byref(address), len(data), 0))
        ctypes.memmove(address.value, data, len(data))
tms.pause("sized")
print(sum(s.backup_bytes for s in stats() if s.tag == "sized"))
"""
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        env.update(TMS_DRIVER="sim", TMS_CONF="sim_capacity_mb=4096")
        result = subprocess.run(
            [sys.executable, "-c", "import sys; sys.modules['torch'] = None\n" + script, json.dumps(paths)],
            env=env, capture_output=True, text=True, timeout=240,
        )
        assert result.returncode == 0, result.stderr
        cpu_total = int(result.stdout.split()[-1])
    # Each tensor is one allocation of its exact size on both sides, so the totals match
    # only if every chunk was stored the same way.
    assert gpu_total == cpu_total, f"GPU stored {gpu_total} bytes, CPU reference {cpu_total}"
    print(f"same_sizes_as_the_cpu_codec {gpu_total} bytes")


def resume_oom_keeps_the_compressed_backup():
    """A resume without memory (allocations or scratch) raises and keeps everything paused; a later one is exact."""
    generator = torch.Generator(device="cuda").manual_seed(3)
    source = (torch.randn(512 * MIB, device="cuda", generator=generator) * 0.02).to(torch.bfloat16)
    weights = in_region("oom", {"weights": source})["weights"]
    expected = bits(source).clone()
    del source
    tms.pause("oom")
    held = backup_bytes("oom")
    for leave in (512 * MIB, GIB + 16 * MIB):  # too little for the tensor; for tensor + scratch
        torch.cuda.empty_cache()
        blocker = torch.empty(free_bytes() - leave, dtype=torch.uint8, device="cuda")
        try:
            tms.resume("oom")
            raise AssertionError(f"resume with {leave} bytes free succeeded")
        except tms_package.OutOfMemoryError as error:
            print("resume_oom message:", error)
            assert "stays paused" in str(error), f"the resume error does not say so: {error}"
        assert backup_bytes("oom") == held, "the backup changed"
        del blocker
    torch.cuda.empty_cache()
    tms.resume("oom")
    assert torch.equal(bits(weights), expected), "contents after the failed resumes"


def main(name, hook_mode):
    tms.hook_mode = hook_mode
    try:
        globals()[name]()
    except BaseException:
        traceback.print_exc()
        return 1
    print("SCENARIO OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
