"""The embedded judge's command line, without starting it (the real judge runs in tests/vllm)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eqs_reward.judge.embedded import resolve_dtype, vllm_command


@pytest.mark.parametrize(
    ("flags", "dtype"),
    [
        ("fpu sse avx avx2 fma", "float32"),  # bf16 emulated: about 4x slower than float32
        ("avx2 avx512f avx512_bf16", "bfloat16"),
        ("avx2 amx_bf16 amx_tile", "bfloat16"),
    ],
)
def test_auto_picks_bfloat16_only_where_the_cpu_computes_in_it(
    tmp_path: Path, flags: str, dtype: str
) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert resolve_dtype("auto", cpuinfo) == dtype
    assert resolve_dtype("bfloat16", cpuinfo) == "bfloat16"  # an explicit setting stands
    assert resolve_dtype("auto", tmp_path / "missing") == "float32"


def test_the_command_carries_the_setting() -> None:
    command = vllm_command(Path("/m"), "judge", 8011, 4096, "float32")
    assert command[command.index("--dtype") + 1] == "float32"
    assert "--enable-prefix-caching" in command
